"""`parentgate imap test | status | backfill`: an IT manager's view of the IMAP mailboxes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gateway.config import Config, MailboxConfig


def _mailbox(config: Config, name: str) -> MailboxConfig:
    for mailbox in config.mailboxes:
        if mailbox.name == name or mailbox.credentials.username == name:
            return mailbox
    names = ", ".join(m.name for m in config.mailboxes) or "none configured"
    raise SystemExit(f"parentgate: no IMAP mailbox {name!r} (mailboxes: {names})")


def imap_command(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.act.mailbox import MailboxError
    from gateway.app import build_runtime
    from gateway.ingest.imap import MailboxActions, backfill
    from gateway.ingest.mailstore import StoreImapPort
    from gateway.store import mailboxes

    if args.action == "test":
        mailbox = _mailbox(config, args.mailbox)
        try:
            print(asyncio.run(MailboxActions().probe(mailbox)))
        except MailboxError as exc:
            print(f"parentgate: {mailbox.name}: {exc}", file=sys.stderr)
            return 1
        return 0
    rt = build_runtime(config, rules)
    if args.action == "status":
        rows = {r[0]: r for r in rt.db.transact(mailboxes.status)}
        for mailbox in config.mailboxes:
            row = rows.get(mailbox.name)
            if row is None:
                print(f"{mailbox.name}: not yet connected")
                continue
            _, ok, detail, at, validity, last = row
            state = "ok" if ok else "FAILING"
            print(f"{mailbox.name}: {state} at {at.isoformat()} (uidvalidity {validity}, last uid {last})"
                  + (f": {detail}" if detail else ""))
        return 0 if all(rows.get(m.name, (None, True))[1] for m in config.mailboxes) else 1
    mailbox = _mailbox(config, args.mailbox)
    port = StoreImapPort(rt.db, rt.clock, lambda: config)

    def progress(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        sys.stderr.flush()

    try:
        new = asyncio.run(backfill(mailbox, port, args.since, progress))
    except MailboxError as exc:
        print(f"\nparentgate: {mailbox.name}: {exc}", file=sys.stderr)
        return 1
    sys.stderr.write("\n")
    print(f"{mailbox.name}: {new} message(s) stored for triage; the daemon processes them")
    return 0
