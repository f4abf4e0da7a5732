"""One-way layers: triage and decide are pure; the store never imports the rule engine (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "gateway"
PURE_FORBIDDEN = ("gateway.store", "gateway.act", "gateway.ingest", "gateway.workers", "gateway.app",
                  "gateway.services", "sqlalchemy", "asyncio", "aiosmtpd", "aiosmtplib", "imapclient", "socket",
                  "apscheduler")
RULES = {
    "triage": PURE_FORBIDDEN,
    "decide": PURE_FORBIDDEN,
    "domain": PURE_FORBIDDEN + ("gateway.triage", "gateway.decide", "gateway.config"),
    "store": ("gateway.triage", "gateway.decide", "gateway.act", "gateway.ingest", "gateway.workers",
              "gateway.services", "gateway.app"),
    # The console reads through gateway.store.console and changes things only through gateway.services.
    "web": ("sqlalchemy", "gateway.store.queue", "gateway.store.models", "gateway.ingest", "gateway.triage",
            "gateway.decide", "gateway.app"),
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_nothing_downstream(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imports(path):
            if any(name == f or name.startswith(f + ".") for f in RULES[layer]):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert bad == []


def test_nobody_assigns_a_message_state_outside_the_queue_door():
    """Outbox rows have their own small lifecycle; a message's State changes only in transition()."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "queue.py":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Assign):
                continue
            assigns_state = any(isinstance(t, ast.Attribute) and t.attr == "state"
                                for target in node.targets for t in ast.walk(target))
            value = ast.get_source_segment(source, node.value) or ""
            if assigns_state and "State." in value.replace("OutboxState.", ""):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
