"""The `parentgate` command: the daemon and the operator's tools. Exit 0 on success, 2 on usage errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from gateway.config import Config, ConfigError
from gateway.triage.rules import RuleError

EXIT_USAGE = 2
log = logging.getLogger("parentgate")


class UsageError(Exception):
    pass


def _version() -> str:
    """The installed distribution's version; the package's own for a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("parentgate")
    except PackageNotFoundError:
        from gateway import __version__
        return __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parentgate", description="A school's home-school email gateway.")
    p.add_argument("--version", action="version", version=f"parentgate {_version()}")
    p.add_argument("--config", default=os.environ.get("PARENTGATE_CONFIG", "/etc/parentgate/config.toml"),
                   help="the TOML configuration file (default: $PARENTGATE_CONFIG or /etc/parentgate/config.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon")
    sub.add_parser("check-config", help="validate the configuration and rules")
    cal = sub.add_parser("calendar", help="show open and closed days")
    cal.add_argument("--school")
    cal.add_argument("--from", dest="start", type=date.fromisoformat)
    cal.add_argument("--days", type=int, default=21)
    sub.add_parser("held", help="list held mail with release times")
    rel = sub.add_parser("release", help="release held mail now")
    rel.add_argument("ids", nargs="*", type=int)
    rel.add_argument("--all", action="store_true")
    q = sub.add_parser("queue", help="list messages")
    q.add_argument("--state")
    q.add_argument("--limit", type=int, default=200)
    rq = sub.add_parser("requeue", help="retry a failed or quarantined message")
    rq.add_argument("id", type=int)
    show = sub.add_parser("show", help="a message's findings and event trail")
    show.add_argument("id", type=int)
    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"])
    tr = sub.add_parser("triage", help="dry run: how would these messages be handled?")
    tr.add_argument("--at", help="ISO-8601 time of receipt (default: each message's Date header)")
    tr.add_argument("--json", action="store_true")
    tr.add_argument("files", nargs="+")
    fam = sub.add_parser("families", help="the family directory")
    famsub = fam.add_subparsers(dest="action", required=True)
    imp = famsub.add_parser("import")
    imp.add_argument("file")
    fshow = famsub.add_parser("show")
    fshow.add_argument("key")
    rev = sub.add_parser("review", help="the Head of School's review queue")
    revsub = rev.add_subparsers(dest="action", required=True)
    revsub.add_parser("list")
    rr = revsub.add_parser("release")
    rr.add_argument("id", type=int)
    rr.add_argument("--note", default="")
    rd = revsub.add_parser("dismiss")
    rd.add_argument("id", type=int)
    rd.add_argument("--note", required=True)
    imap = sub.add_parser("imap", help="IMAP mailboxes")
    imapsub = imap.add_subparsers(dest="action", required=True)
    it = imapsub.add_parser("test")
    it.add_argument("mailbox")
    imapsub.add_parser("status")
    ib = imapsub.add_parser("backfill")
    ib.add_argument("mailbox")
    ib.add_argument("--since", type=date.fromisoformat, required=True)
    return p


_JUDGING = frozenset({"run", "check-config", "triage"})


def _actor() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "operator"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from gateway.app import load_all, load_config
        # Only the commands that judge mail load the rules (about a second); the others, which an
        # administrator runs by hand (held, release, queue, review, ...), start without them.
        config, rules = load_all(args.config) if args.command in _JUDGING else load_config(args.config)
    except (ConfigError, RuleError) as exc:
        print(f"parentgate: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=config.gateway.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs a dozen INFO lines per SMTP session, peer addresses included: a tenth of the event
    # loop's time under load, and personal data we do not need. Its warnings and errors still show.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
    if args.command == "check-config":
        from gateway.preflight import report
        fine, problems = report(config)
        if problems:
            print("\n".join(f"parentgate: {line}" for line in problems), file=sys.stderr)
            return EXIT_USAGE
        print(f"{config.path}: ok ({len(config.schools)} school(s), {len(config.mailboxes)} IMAP mailbox(es), "
              f"rules {rules.digest[:12]})")
        print("\n".join(fine))
        return 0
    if args.command == "calendar":
        return _calendar(config, args)
    try:
        return _COMMANDS[args.command](config, rules, args)
    except UsageError as exc:
        print(f"parentgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the operator gets a line, not a traceback
        from gateway.services import ServiceError
        if isinstance(exc, ServiceError):
            print(f"parentgate: {exc}", file=sys.stderr)
            return 1
        raise


def _runtime(config: Config, rules: Any) -> Any:
    from gateway.app import build_runtime
    return build_runtime(config, rules)


def _run(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.app import Daemon
    rt = _runtime(config, rules)
    return asyncio.run(Daemon(config.path, rt).run())


def _calendar(config: Config, args: argparse.Namespace) -> int:
    schools = [config.school(args.school)] if args.school else list(config.schools)
    start = args.start or datetime.now(timezone.utc).astimezone(config.tz).date()
    for school in schools:
        cal = school.calendar
        print(f"{school.name} ({school.id}): open {cal.open_at:%H:%M}-"
              f"{'24:00' if cal.close_at is None else format(cal.close_at, '%H:%M')} ({config.gateway.timezone})")
        for day in cal.days(start, args.days):
            term = cal.half_term(datetime.combine(day.day, cal.open_at, tzinfo=cal.tz)).name if day.open else ""
            status = "open  " if day.open else "closed"
            print(f"  {day.day.isoformat()} {day.day:%a}  {status}  {day.detail or day.reason if not day.open else term}")
    return 0


def _fmt(t: datetime | None, config: Config) -> str:
    return t.astimezone(config.tz).strftime("%a %d %b %Y %H:%M %Z") if t else "-"


def _held(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import list_messages
    rows = list_messages(_runtime(config, rules), "held")
    if not rows:
        print("no held mail")
    for r in rows:
        print(f"{r.id:>8}  {r.school:<12} received {_fmt(r.received_at, config)}  "
              f"release {_fmt(r.release_at, config)}  to {', '.join(r.rcpts)}")
    return 0


def _release(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import release
    if not args.all and not args.ids:
        raise UsageError("give message ids or --all")
    done = release(_runtime(config, rules), None if args.all else list(args.ids))
    print(f"released {len(done)} message(s)" + (f": {', '.join(map(str, done))}" if done else ""))
    return 0


def _queue(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import list_messages, state_counts
    rt = _runtime(config, rules)
    if not args.state:
        counts = state_counts(rt)
        print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "the queue is empty")
    for r in list_messages(rt, args.state, args.limit):
        print(f"{r.id:>8}  {r.state:<11} {r.route or '-':<14} {_fmt(r.received_at, config)}  "
              f"{r.mail_from or '<>'} -> {', '.join(r.rcpts)}  {','.join(r.flags)}")
    return 0


def _requeue(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import requeue
    n = requeue(_runtime(config, rules), args.id, _actor())
    print(f"message {args.id} requeued ({n} row(s))")
    return 0


def _show(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import events, list_messages
    rt = _runtime(config, rules)
    found = [r for r in list_messages(rt, None, 10**9) if r.id == args.id]
    if not found:
        raise UsageError(f"no message {args.id}")
    r = found[0]
    print(f"message {r.id} ({r.school}): {r.state}, route {r.route}, family {r.family}")
    for rule, evidence in r.reasons:
        print(f"  reason {rule}: {evidence}")
    for at, src, dst, actor, reason in events(rt, args.id):
        print(f"  {_fmt(at, config)}  {src or '-'} -> {dst}  by {actor}  {reason}")
    return 0


def _db(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.store.database import Database
    Database(config.gateway.database, migrate=True).close()
    print("database is up to date")
    return 0


def _triage(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.dryrun import triage_files
    at = None
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise UsageError(f"--at {args.at!r} is not an ISO-8601 time") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=config.tz)
    unreadable = [f for f in args.files if not os.path.isfile(f) or not os.access(f, os.R_OK)]
    if unreadable:
        raise UsageError(f"cannot read {unreadable[0]}")
    for line in triage_files(config, rules, [Path(f) for f in args.files], at, as_json=args.json):
        print(line, flush=False)
    sys.stdout.flush()
    return 0


def _families(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import import_families, show_family
    rt = _runtime(config, rules)
    if args.action == "import":
        try:
            text = Path(args.file).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        counts = import_families(rt, text)
        for school, n in counts.items():
            print(f"{school}: {n} row(s) imported (the school's directory was replaced)")
        return 0
    rows = show_family(rt, args.key)
    if not rows:
        print(f"{args.key}: not in the directory (an unknown sender is its own family)")
        return 1
    for row in rows:
        print(f"{row.school}  {row.family_id}  {row.email}  {row.parent_name}  child {row.child_name} "
              f"({row.year_group})")
    return 0


def _review(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import list_messages, review_dismiss, review_release
    rt = _runtime(config, rules)
    if args.action == "list":
        rows = list_messages(rt, "in_review")
        if not rows:
            print("nothing to review")
        for r in rows:
            print(f"{r.id:>8}  {r.school:<12} {_fmt(r.received_at, config)}  from {r.mail_from or '<>'} "
                  f"to {', '.join(r.rcpts)}")
            for rule, evidence in r.reasons:
                print(f"          {rule}: {evidence}")
        return 0
    if args.action == "release":
        print(f"message {args.id}: {review_release(rt, args.id, _actor(), args.note)}")
        return 0
    review_dismiss(rt, args.id, _actor(), args.note)
    print(f"message {args.id}: dismissed")
    return 0


def _imap(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.imapcli import imap_command
    return imap_command(config, rules, args)


_COMMANDS: dict[str, Callable[[Config, Any, argparse.Namespace], int]] = {
    "run": _run, "held": _held, "release": _release, "queue": _queue, "requeue": _requeue, "show": _show,
    "db": _db, "triage": _triage, "families": _families, "review": _review, "imap": _imap,
}
