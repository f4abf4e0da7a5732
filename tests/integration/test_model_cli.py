"""The learned model through the commands: `model train`, `triage --json` with the two new flags, and a
SIGHUP reload that meets a damaged model and keeps the running one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.triage.learned import load_model
from tests.integration.test_crash import start_daemon
from tests.support import STAFF, free_port, message, wire, write_config
from tests.unit.test_learned import rules_with, tiny_model

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"

pytestmark = pytest.mark.timeout(300)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=280,
                          cwd=cwd)


def test_model_train_prints_cross_validated_figures_and_writes_the_same_loadable_model_twice(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="training needs scikit-learn (parentgate[train])")
    outs = []
    for name in ("a", "b"):
        out = cli("model", "train", str(CORPUS / "dev"), str(CORPUS / "spotcheck"),
                  "--out", str(tmp_path / name / "models"), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        outs.append(out.stdout.replace(str(tmp_path / name), "OUT"))
    assert "cross-validated" in outs[0] and "route accuracy" in outs[0] and "precision" in outs[0]
    assert "dev: n=90" in outs[0] and "spotcheck: n=40" in outs[0]
    assert outs[0] == outs[1]
    first = (tmp_path / "a" / "models" / "triage.json").read_bytes()
    assert first == (tmp_path / "b" / "models" / "triage.json").read_bytes()
    model = load_model(tmp_path / "a")
    assert model.summary["corpus"]["messages"] == 130
    assert model.summary["corpus"]["folders"] == {"dev": 90, "spotcheck": 40}


def test_model_train_refuses_a_folder_without_labels_with_one_clear_line(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="training needs scikit-learn (parentgate[train])")
    (tmp_path / "empty").mkdir()
    out = cli("model", "train", str(tmp_path / "empty"), "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no labels.jsonl" in out.stderr
    assert not (tmp_path / "m").exists()


def test_triage_json_keeps_its_contract_with_possible_safeguarding_and_needs_interpreter(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, tiny_model())
    cfg = write_config(tmp_path, gateway_extra=f'rules_dir = "{rules}"\n')
    files = {
        "possible.eml": "Could you let me know what the reading scheme is? He checks his phone a lot in the evenings.",
        "finnish.eml": "Hyvää huomenta opettaja. Poikani ei ole voinut hyvin viime viikkoina ja hän on ollut "
                       "kotona paljon. Voisimmeko tavata ensi viikolla koulun jälkeen? Kiitos paljon.",
        "routine.eml": "Could Maya have a new reading book please? She loved the last one.",
    }
    for name, body in files.items():
        (tmp_path / name).write_bytes(wire(message(body=body)))
    out = cli("--config", str(cfg), "triage", "--json", "--at", "2026-11-24T10:00:00+00:00",
              *(str(tmp_path / name) for name in files), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    for row in rows.values():
        assert {"file", "route", "deliver_at", "tone", "flags", "reasons", "acknowledge", "family"} <= set(row)
        assert all(set(r) == {"rule", "evidence"} for r in row["reasons"])
    assert rows["possible.eml"]["route"] == "staff"
    assert "possible-safeguarding" in rows["possible.eml"]["flags"]
    assert any(r["rule"] == "model:safeguarding" and "checks his phone" in r["evidence"]
               for r in rows["possible.eml"]["reasons"])
    assert "needs-interpreter" in rows["finnish.eml"]["flags"]
    assert rows["routine.eml"]["flags"] == [] and rows["routine.eml"]["route"] == "staff"


def test_sighup_with_a_damaged_model_keeps_the_running_rules(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, tiny_model())
    port = free_port()
    cfg = write_config(tmp_path, smtp_port=port, gateway_extra=f'rules_dir = "{rules}"\n')
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, port, log)
    try:
        damaged = tiny_model()
        damaged["decisions"]["urgent"]["bias"] = 9.0  # changed without a new digest
        (rules / "models" / "triage.json").write_text(json.dumps(damaged))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while b"reload refused" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_bytes()
        assert b"reload refused" in text and b"triage.json" in text and b"digest does not match" in text
        assert proc.poll() is None
        import smtplib
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.sendmail("parent@example.com", [STAFF], wire(message()))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
