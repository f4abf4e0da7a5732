"""The `parentgate` command: the daemon and the operator's tools. Exit 0 on success, 2 on usage errors."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from gateway.config import Config, ConfigError
from gateway.domain.states import OutboxState, State
from gateway.ops.logs import configure as configure_logging, escape
from gateway.triage.rules import RuleError

# Usage errors and start-up failures (configuration invalid, port in use, database unreachable).
EXIT_USAGE = 2


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
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Commands that change a message record who did it: --actor, else the person behind sudo, else the
    # login name (never the host name: the event trail must name a person).
    person = argparse.ArgumentParser(add_help=False)
    person.add_argument("--actor", metavar="NAME",
                        help="who is doing this, for the event trail (default: $SUDO_USER, else your login name)")

    def command(parent: Any, name: str, text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text, parents=list(parents))
        return parser

    command(sub, "run", "run the daemon: SMTP listener, triage, release and delivery, until SIGTERM")
    command(sub, "console", "serve the Head of School's web console alone ([console] in the configuration)")
    command(sub, "check-config", "validate the configuration file and the rules, then exit")
    cal = command(sub, "calendar", "show which days each school is open or closed, and why")
    cal.add_argument("--school", help="one school's id (default: every school)")
    cal.add_argument("--from", dest="start", type=date.fromisoformat, metavar="YYYY-MM-DD",
                     help="first day shown (default: today)")
    cal.add_argument("--days", type=int, default=21, help="how many days to show (default: 21)")
    command(sub, "held", "list held mail with the time each message will be released")
    rel = command(sub, "release", "release held mail now, before the school opens", person)
    rel.add_argument("ids", nargs="*", type=int, metavar="ID", help="message ids to release")
    rel.add_argument("--all", action="store_true", help="release every held message")
    q = command(sub, "queue", "list messages with their outbox rows: attempts, last server reply, next try")
    q.add_argument("--state", choices=[state.value for state in State], metavar="STATE",
                   help="only messages in this state: " + ", ".join(state.value for state in State))
    q.add_argument("--limit", type=int, default=200, help="at most this many messages (default: 200)")
    rq = command(sub, "requeue", "try a failed message's deliveries again, or re-triage a quarantined one", person)
    rq.add_argument("id", type=int, help="the message id")
    show = command(sub, "show", "one message: findings, outbox rows (attempts, last reply, next try) and events")
    show.add_argument("id", type=int, help="the message id")
    db = command(sub, "db", "database maintenance")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply any pending schema migrations")
    tr = command(sub, "triage", "dry run: how would these messages be handled? (nothing is stored or sent)")
    tr.add_argument("--at", help="ISO-8601 time of receipt (default: each message's Date header)")
    tr.add_argument("--json", action="store_true", help="one JSON object per file and line")
    tr.add_argument("files", nargs="+", metavar="FILE.eml", help="messages to triage")
    fam = command(sub, "families", "the family directory (parents' addresses, imported from the school's CSV)")
    famsub = fam.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = command(famsub, "import", "replace each school's directory with the rows of a CSV file")
    imp.add_argument("file", help="the CSV file")
    fshow = command(famsub, "show", "the family of an address, or the addresses of a family id")
    fshow.add_argument("key", help="an email address or a family id")
    fexp = command(famsub, "export", "everything held about a family, as a zip file (subject access)")
    fexp.add_argument("family", metavar="FAMILY", help="a family id or any of its addresses")
    fexp.add_argument("--out", required=True, metavar="FILE.zip", help="the zip file to write")
    fera = command(famsub, "erase", "remove a family's messages and personal data; incidents are kept "
                   "without content or addresses", person)
    fera.add_argument("family", metavar="FAMILY", help="a family id or any of its addresses")
    fera.add_argument("--confirm", action="store_true", help="required: erasing cannot be undone")
    inc = command(sub, "incidents", "incident records: every message of concern, and those recorded by hand")
    incsub = inc.add_subparsers(dest="action", required=True, metavar="ACTION")
    iexp = command(incsub, "export", "incidents as CSV for the school's recording system (UTF-8, header row)")
    iexp.add_argument("--school", help="one school's id (default: every school)")
    iexp.add_argument("--from", dest="start", type=date.fromisoformat, metavar="YYYY-MM-DD",
                      help="first day (school time, included)")
    iexp.add_argument("--to", dest="end", type=date.fromisoformat, metavar="YYYY-MM-DD",
                      help="last day (school time, included)")
    iexp.add_argument("--category", help="only this category: safeguarding, abusive, negative, "
                      "excessive contact, personal, plan breach")
    iexp.add_argument("--out", metavar="FILE", help="write to this file instead of standard output")
    iadd = command(incsub, "add", "record an incident by hand, about a message or a family", person)
    iadd.add_argument("--message", type=int, metavar="ID", help="the message it is about")
    iadd.add_argument("--family", metavar="FAMILY", help="the family it is about (a family id or an address)")
    iadd.add_argument("--category", required=True, help="safeguarding, abusive, negative, excessive contact, "
                      "personal or plan breach")
    iadd.add_argument("--action", dest="action_taken", required=True, help="the action taken")
    iadd.add_argument("--note", default="", help="a note for the record")
    rev = command(sub, "review", "the Head of School's review queue")
    revsub = rev.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(revsub, "list", "messages waiting for the Head of School, with the reasons")
    rr = command(revsub, "release", "let a reviewed message through to its recipients", person)
    rr.add_argument("id", type=int, help="the message id")
    rr.add_argument("--note", default="", help="a note for the event trail")
    rd = command(revsub, "dismiss", "keep a reviewed message back (not delivered); a note is required", person)
    rd.add_argument("id", type=int, help="the message id")
    rd.add_argument("--note", required=True, help="why it is kept back")
    pl = command(sub, "plan", "a family's communication plan (policy 003): mail read in a weekly window")
    plsub = pl.add_subparsers(dest="action", required=True, metavar="ACTION")
    ps = command(plsub, "start", "put a family on a plan: its mail to staff goes to the reader at the window", person)
    ps.add_argument("family", metavar="FAMILY", help="a family id or any of its addresses")
    ps.add_argument("--window", required=True, help='the reading window, e.g. "tue 09:00-10:00" (school time)')
    ps.add_argument("--fortnightly", action="store_true", help="every other week (from the first window)")
    ps.add_argument("--reader", help="who reads the family's mail (default: the Head of School)")
    ps.add_argument("--review", type=date.fromisoformat, metavar="YYYY-MM-DD",
                    help="the review date (default: six months from today)")
    ps.add_argument("--note", required=True, help="why, for the record")
    pe = command(plsub, "end", "end a family's plan", person)
    pe.add_argument("family", metavar="FAMILY", help="a family id or any of its addresses")
    pe.add_argument("--note", required=True, help="why, for the record")
    command(sub, "plans", "communication plans: active ones (and those due for review) first")
    bl = command(sub, "block", "block an address or a whole family: its mail is kept and delivered to nobody",
                 person)
    bl.add_argument("target", metavar="ADDRESS|FAMILY", help="an address, or a family id")
    bl.add_argument("--note", required=True, help="why, for the record")
    bl.add_argument("--until", type=date.fromisoformat, metavar="YYYY-MM-DD",
                    help="the block lifts at the start of this day (default: until unblocked)")
    ub = command(sub, "unblock", "lift the blocks on an address or a family", person)
    ub.add_argument("target", metavar="ADDRESS|FAMILY", help="an address, or a family id")
    ub.add_argument("--note", required=True, help="why, for the record")
    bls = command(sub, "blocks", "blocks, newest first, with the messages each has kept")
    bls.add_argument("--all", action="store_true", help="lifted and expired blocks too")
    es = command(sub, "escalate", "move a family up the escalation ladder and print the letter's draft", person)
    es.add_argument("family", metavar="FAMILY", help="a family id or any of its addresses")
    es.add_argument("--stage", required=True, choices=["meeting", "warning", "legal-advice", "ban"])
    es.add_argument("--until", type=date.fromisoformat, metavar="YYYY-MM-DD", help="a ban's end date (required)")
    es.add_argument("--note", required=True, help="why, for the record (also in the letter)")
    es.add_argument("--edit", action="store_true", help="edit the letter in $EDITOR before it is kept (and sent)")
    es.add_argument("--send", action="store_true", help="email the letter to the family from the Head's address")
    imap = command(sub, "imap", "IMAP mailboxes (hosted mail)")
    imapsub = imap.add_subparsers(dest="action", required=True, metavar="ACTION")
    it = command(imapsub, "test", "connect to one mailbox and report what the server offers")
    it.add_argument("mailbox", help="the mailbox's name or username")
    command(imapsub, "status", "each mailbox's last status and checkpoint")
    model = command(sub, "model", "the learned triage model (rules/models/triage.json)")
    modelsub = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    mt = command(modelsub, "train", "retrain from labelled folders (.eml + labels.jsonl) and print "
                                    "cross-validated figures (needs scikit-learn: parentgate[train])")
    mt.add_argument("folders", nargs="+", metavar="FOLDER", help="labelled folders, as tests/corpus/dev")
    mt.add_argument("--out", default="models", help="where to write triage.json (default: ./models); "
                                                      "a rules_dir reads it from its models/ folder")
    mt.add_argument("--rules", help="the rules directory whose signals the model learns from "
                                    "(default: the shipped rules)")
    mt.add_argument("--tune-on", nargs="+", metavar="FOLDER",
                    help="choose the thresholds on these folders' cross-validated results (default: all); "
                         "name folders the rules were not written against")
    ib = command(imapsub, "backfill", "offer a mailbox's mail since a date to triage")
    ib.add_argument("mailbox", help="the mailbox's name or username")
    ib.add_argument("--since", type=date.fromisoformat, required=True, metavar="YYYY-MM-DD",
                    help="first day of mail to offer")
    return p


_JUDGING = frozenset({"run", "check-config", "triage"})


def _actor(args: argparse.Namespace) -> str:
    """The person doing an action: --actor, else who ran sudo, else the login name."""
    name = getattr(args, "actor", None) or os.environ.get("SUDO_USER") or _login_name()
    return escape(name)[:64]


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no name in the environment or the password database
        return f"uid {os.getuid()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "model":
        # Training reads labelled folders and writes a file: no configuration, no database.
        from gateway.training import model_command
        return model_command(args)
    try:
        from gateway.app import load_all, load_config
        # Only the commands that judge mail load the rules (about a second); the others, which an
        # administrator runs by hand (held, release, queue, review, ...), start without them.
        config, rules = load_all(args.config) if args.command in _JUDGING else load_config(args.config)
    except (ConfigError, RuleError) as exc:
        print(f"parentgate: configuration error: {escape(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.gateway.log_level)
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
    from gateway.app import StartupError
    from gateway.services import ServiceError
    try:
        return _COMMANDS[args.command](config, rules, args)
    except UsageError as exc:
        print(f"parentgate: {escape(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        # Port in use, database unreachable: one line that says what to fix, not a traceback.
        print(f"parentgate: {escape(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except ServiceError as exc:
        print(f"parentgate: {escape(str(exc))}", file=sys.stderr)
        return 1


def _runtime(config: Config, rules: Any) -> Any:
    from gateway.app import build_runtime
    return build_runtime(config, rules)


def _run(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.app import Daemon
    rt = _runtime(config, rules)
    return asyncio.run(Daemon(config.path, rt).run())


def _console(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.app import console_alone
    if config.console is None:
        raise UsageError("the configuration has no [console] table")
    return asyncio.run(console_alone(_runtime(config, rules)))


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
    done = release(_runtime(config, rules), None if args.all else list(args.ids), _actor(args))
    print(f"released {len(done)} message(s)" + (f": {', '.join(map(str, done))}" if done else ""))
    return 0


def _outbox_lines(rows: list[Any], config: Config) -> list[str]:
    """One line per outbox row: what it is, how it stands, how often it was tried, the server's last
    reply, and when it is tried next (for rows still waiting)."""
    lines = []
    for o in rows:
        waiting = o.state in (OutboxState.PENDING.value, OutboxState.DEFERRED.value)
        when = f"next {_fmt(o.not_before, config)}" if waiting else f"done {_fmt(o.finished_at, config)}"
        reply = f"  last reply: {escape(o.last_error)}" if o.last_error else ""
        lines.append(f"          outbox {o.id}: {o.kind:<8} {o.state:<8} attempts {o.attempts}  {when}  "
                     f"to {escape(', '.join(o.rcpts))}{reply}")
    return lines


def _queue(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import list_messages, outbox_of, state_counts
    rt = _runtime(config, rules)
    if not args.state:
        counts = state_counts(rt)
        print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "the queue is empty")
    rows = list_messages(rt, args.state, args.limit)
    outbox = outbox_of(rt, [r.id for r in rows])
    for r in rows:
        print(f"{r.id:>8}  {r.state:<11} {r.route or '-':<14} {_fmt(r.received_at, config)}  "
              f"{escape(r.mail_from or '<>')} -> {escape(', '.join(r.rcpts))}  {','.join(r.flags)}")
        for line in _outbox_lines(outbox.get(r.id, []), config):
            print(line)
    return 0


def _requeue(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import requeue
    n = requeue(_runtime(config, rules), args.id, _actor(args))
    print(f"message {args.id} requeued ({n} row(s))")
    return 0


def _show(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.services import events, get_message, outbox_of
    rt = _runtime(config, rules)
    r = get_message(rt, args.id)
    if r is None:
        raise UsageError(f"no message {args.id}")
    print(f"message {r.id} ({r.school}): {r.state}, route {r.route}, sender {r.sender_class or '-'}, "
          f"family {escape(r.family or '-')}")
    print(f"  from {escape(r.mail_from or '<>')} to {escape(', '.join(r.rcpts))}, received {_fmt(r.received_at, config)}"
          + (f", release {_fmt(r.release_at, config)}" if r.release_at else ""))
    print(f"  flags {', '.join(r.flags) or '-'}")
    for rule, evidence in r.reasons:
        print(f"  reason {rule}: {escape(evidence)}")
    for line in _outbox_lines(outbox_of(rt, [r.id]).get(r.id, []), config):
        print(line[6:])
    for at, src, dst, actor, reason in events(rt, args.id):
        print(f"  {_fmt(at, config)}  {src or '-'} -> {dst}  by {escape(actor)}  {escape(reason)}")
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
    if args.action == "export":
        from gateway.records import export_family
        n = export_family(rt, args.family, Path(args.out))
        print(f"{args.out}: {n} message(s) with their findings, events, incidents, plans and blocks")
        return 0
    if args.action == "erase":
        from gateway.records import erase_family
        if not args.confirm:
            raise UsageError("erasing a family's data cannot be undone: add --confirm")
        done = erase_family(rt, args.family, _actor(args))
        print(f"erased {done.messages} message(s) and the family's personal data; "
              f"{done.incidents_kept} incident(s) kept without content or addresses; the erasure is recorded")
        if done.leftovers:
            print("parentgate: still named in " + ", ".join(done.leftovers) + " (another sender's mail)",
                  file=sys.stderr)
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
        print(f"message {args.id}: {review_release(rt, args.id, _actor(args), args.note)}")
        return 0
    review_dismiss(rt, args.id, _actor(args), args.note)
    print(f"message {args.id}: dismissed")
    return 0


def _incidents(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.records import add_incident, export_incidents
    rt = _runtime(config, rules)
    if args.action == "add":
        number = add_incident(rt, category=args.category, action=args.action_taken, actor=_actor(args),
                              family=args.family, message=args.message, note=args.note)
        print(f"incident {number} recorded")
        return 0
    filters = dict(school=args.school, start=args.start, end=args.end, category=args.category)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                n = export_incidents(rt, out, **filters)
        except OSError as exc:
            raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
        print(f"{n} incident(s) written to {args.out}")
        return 0
    sys.stdout.reconfigure(encoding="utf-8", newline="")  # type: ignore[union-attr]
    export_incidents(rt, sys.stdout, **filters)
    return 0


def _plan(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.casework import end_plan, start_plan
    rt = _runtime(config, rules)
    if args.action == "start":
        v = start_plan(rt, args.family, window=args.window, note=args.note, actor=_actor(args),
                       fortnightly=args.fortnightly, reader=args.reader, review=args.review)
        print(f"plan {v.id}: family {escape(v.family_id)} ({v.school}), {v.window}, read by {escape(v.reader)}; "
              f"next window {_fmt(v.next_window, config)}; review on {v.review_on.isoformat()}")
        return 0
    v = end_plan(rt, args.family, note=args.note, actor=_actor(args))
    print(f"plan {v.id}: family {escape(v.family_id)} ended")
    return 0


def _plans(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.casework import list_plans
    rows = list_plans(_runtime(config, rules))
    if not rows:
        print("no communication plans")
    for v in rows:
        status = ("ended " + _fmt(v.ended_at, config) if v.ended_at else
                  "DUE FOR REVIEW" if v.due_for_review else "active")
        print(f"{v.id:>6}  {v.school:<12} {escape(v.family_id):<16} {status:<16} {v.window}  "
              f"reader {escape(v.reader)}  review {v.review_on.isoformat()}  note: {escape(v.note)}")
    return 0


def _block(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.casework import block, unblock
    rt = _runtime(config, rules)
    if args.command == "block":
        v = block(rt, args.target, note=args.note, actor=_actor(args), until=args.until)
        print(f"block {v.id}: {escape(v.address or 'family ' + (v.family_id or ''))} blocked"
              + (f" until {_fmt(v.until, config)}" if v.until else ""))
        return 0
    for v in unblock(rt, args.target, note=args.note, actor=_actor(args)):
        print(f"block {v.id}: lifted")
    return 0


def _blocks(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.casework import list_blocks
    rows = list_blocks(_runtime(config, rules), active_only=not args.all)
    if not rows:
        print("no blocks in force")
    for v in rows:
        who = v.address or f"family {v.family_id}"
        status = "active" if v.active else ("lifted " + _fmt(v.lifted_at, config) if v.lifted_at else "expired")
        print(f"{v.id:>6}  {v.school:<12} {escape(who):<32} {status:<10} "
              f"until {_fmt(v.until, config) if v.until else '-':<26} kept {v.blocked_messages}  note: {escape(v.note)}")
    return 0


def _escalate(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.casework import escalate
    rt = _runtime(config, rules)
    text = None
    if args.edit:
        text = _edit_draft(rt, args)
    done = escalate(rt, args.family, stage=args.stage, note=args.note, actor=_actor(args), until=args.until,
                    send=args.send, text=text)
    print(f"stage: {done.stage.value}" + (f" until {done.until.isoformat()}" if done.until else ""))
    if done.block is not None:
        print(f"block {done.block.id}: the family is blocked until {_fmt(done.block.until, config)}")
    if done.draft is None:
        print("(no letter for this stage)")
        return 0
    print(f"letter {done.letter_id}:" + (f" sent to {', '.join(done.sent_to)}" if done.sent_to else " draft, not sent"))
    print()
    print(done.draft, end="")
    return 0


def _edit_draft(rt: Any, args: argparse.Namespace) -> str:
    """The draft as it would be, edited in $EDITOR (nothing is recorded until the editor is closed)."""
    import shlex
    import subprocess
    import tempfile

    from gateway.casework import preview_letter
    draft = preview_letter(rt, args.family, stage=args.stage, note=args.note, until=args.until)
    if draft is None:
        raise UsageError(f"the stage {args.stage} has no letter to edit")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write(draft)
        path = f.name
    try:
        if subprocess.call([*shlex.split(editor), path]) != 0:
            raise UsageError("the editor failed; nothing was recorded")
        return Path(path).read_text(encoding="utf-8")
    finally:
        os.unlink(path)


def _imap(config: Config, rules: Any, args: argparse.Namespace) -> int:
    from gateway.imapcli import imap_command
    return imap_command(config, rules, args)


_COMMANDS: dict[str, Callable[[Config, Any, argparse.Namespace], int]] = {
    "run": _run, "console": _console, "held": _held, "release": _release, "queue": _queue, "requeue": _requeue, "show": _show,
    "db": _db, "triage": _triage, "families": _families, "review": _review, "imap": _imap,
    "incidents": _incidents,
    "plan": _plan, "plans": _plans, "block": _block, "unblock": _block, "blocks": _blocks, "escalate": _escalate,
}
