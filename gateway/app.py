"""The one place that builds and wires everything: configuration, rules, database, workers, listeners."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import config as config_mod
from gateway.act.maildir import MaildirTransport
from gateway.act.probe import RecipientVerifier
from gateway.act.relay import RelayTarget, SmtpRelay
from gateway.act.transport import Transport
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.heap import Heap
from gateway.ingest.inbox import Inbox
from gateway.imapmode import ImapMode, make_mover, submission_transport
from gateway.ingest.listener import Listener
from gateway.ingest.smtp import start_server
from gateway.jobs import Jobs
from gateway.services import purge_expired
from gateway.store.database import Database
from gateway.store.db import safe_url
from gateway.ops.health import Health
from gateway.ops.notify import Notifier, watch_gateway
from gateway.ops.server import OpsServer
from gateway.store.queue import clear_leases
from gateway.triage.rules import RuleSet, default_rules_dir, load_rules
from gateway.workers.delivery import DeliveryWorker
from gateway.workers.digest import DigestWorker
from gateway.workers.judging import JudgePool
from gateway.workers.release import release_all_due
from gateway.workers.runtime import Runtime, Wakeup, make_owner
from gateway.workers.triage import TriageWorker

if TYPE_CHECKING:
    from gateway.web.server import ConsoleServer

log = logging.getLogger("parentgate")


def rules_dir(config: Config) -> Path:
    return config.gateway.rules_dir or default_rules_dir()


def load_all(path: Path | str) -> tuple[Config, RuleSet]:
    """Configuration and rules together: both must be valid, or neither is used."""
    config = config_mod.load(path)
    rules = load_rules(rules_dir(config))
    return config, rules


def load_config(path: Path | str) -> tuple[Config, RuleSet]:
    """The configuration alone, for work that judges no mail: the rules are left unloaded (empty)."""
    return config_mod.load(path), RuleSet(digest="")


def lease_owner(config: Config) -> str:
    """This gateway's name on its leases: stable across its restarts, different from every other
    gateway's (another configuration file or listening address) sharing the database."""
    identity = hashlib.sha256(f"{config.path}|{config.smtp.host}:{config.smtp.port}".encode()).hexdigest()[:12]
    return make_owner(identity)


class StartupError(Exception):
    """The daemon or a command cannot start (database unreachable, port in use): one line for the operator."""


def one_line(exc: BaseException) -> str:
    """An exception's first line, for a start-up message (drivers add SQL and links on later lines)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:300]


def build_runtime(config: Config, rules: RuleSet, *, clock: Clock | None = None, migrate: bool = True) -> Runtime:
    try:
        config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the state directory {config.gateway.state_dir}: "
                           f"{exc.strerror or one_line(exc)}") from exc
    try:
        db = Database(config.gateway.database, migrate=migrate)
    except Exception as exc:  # noqa: BLE001 - any failure here means the gateway cannot start
        raise StartupError(f"cannot open the database {safe_url(config.gateway.database)}: {one_line(exc)}") from exc
    return Runtime(db=db, clock=clock or SystemClock(), config=config, rules=rules,
                   templates_dir=rules_dir(config) / "templates", owner=lease_owner(config))


def delivery_transport(config: Config) -> Transport:
    if config.delivery.mode == "maildir":
        return MaildirTransport(config.delivery.maildir_root)
    return SmtpRelay(RelayTarget(host=config.delivery.smarthost_host, port=config.delivery.smarthost_port,
                                 hostname=config.smtp.hostname, ascii_sender=config.gateway.postmaster))


class Daemon:
    """`parentgate run`: SMTP in, triage, release, delivery, until SIGTERM."""

    def __init__(self, config_path: Path, rt: Runtime) -> None:
        self.config_path = config_path
        self.rt = rt
        self.stopping = asyncio.Event()
        self.triage_wakeup = Wakeup()
        self.judges: JudgePool | None = None

    def reload(self) -> None:
        try:
            config, rules = load_all(self.config_path)
        except Exception as exc:  # noqa: BLE001 - a bad reload keeps the running configuration
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        self.rt.config, self.rt.rules = config, rules
        self.rt.templates_dir = rules_dir(config) / "templates"
        if self.judges is not None:
            self.judges.reload(rules_dir(config))
        log.info("configuration and rules reloaded (rules %s)", rules.digest[:12])

    async def _triage_loop(self, worker: TriageWorker) -> None:
        while not self.stopping.is_set():
            self.rt.metrics.tick("triage")
            try:
                # Two batches in hand: the next one is judged while this one is written.
                n = await worker.run_once(depth=2)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                log.exception("triage batch failed")
                n = 0
                await asyncio.sleep(1)
            if n == 0:
                await self.triage_wakeup.wait(1.0)

    async def run(self) -> int:
        rt = self.rt
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

        # The listeners are bound before anything else changes: a second daemon started by mistake on
        # the same ports stops here, before it could clear the running one's leases.
        heap = Heap()
        heap.limit_growth()
        inbox = Inbox(rt.db, rt.clock, on_stored=self.triage_wakeup.set, on_large=heap.note_large)
        inbox.start()
        listen = (rt.config.smtp.host, rt.config.smtp.port)
        try:
            server = await start_server(lambda: rt.config, inbox, metrics=rt.metrics,
                                        verifier=RecipientVerifier(lambda: rt.config, rt.clock))
        except OSError as exc:
            await inbox.stop()
            raise StartupError(f"cannot listen for SMTP on {listen[0]}:{listen[1]}: "
                               f"{exc.strerror or one_line(exc)}") from None
        try:
            ops = await self._start_ops(server, listen)
            console = await start_console(rt, server)
        except StartupError:
            await inbox.stop()
            raise
        # Leases held by this gateway's previous incarnation (killed, or the machine rebooted) are ours
        # to clear; with SQLite there is only one gateway, so every lease is.
        owner = None if rt.db.single_writer else rt.owner
        try:
            await rt.db.run(lambda s: clear_leases(s, owner))
        except Exception as exc:  # noqa: BLE001 - the database went away during start-up
            server.close()
            if ops is not None:
                await ops.close()
            await inbox.stop()
            raise StartupError(f"cannot use the database {safe_url(rt.config.gateway.database)}: "
                               f"{one_line(exc)}") from exc

        primary = delivery_transport(rt.config)
        imap = ImapMode(rt)
        outbound = submission_transport(rt.config)
        delivery = DeliveryWorker(rt, primary, mover=make_mover(rt, imap.actions), outbound=outbound)
        rt.wake_delivery = delivery.wake
        rt.hand_over = delivery.hand_over
        rt.wake_triage = self.triage_wakeup.set
        self.judges = JudgePool(rules_dir(rt.config), database_url=rt.db.url)
        triage = TriageWorker(rt, pool=self.judges, stopping=self.stopping.is_set)
        tasks = [asyncio.create_task(self._triage_loop(triage), name="triage"),
                 asyncio.create_task(delivery.run(), name="delivery")]
        leases = asyncio.create_task(triage.keep_leases(), name="triage-leases")
        trimmer = asyncio.create_task(heap.keep_trimmed(), name="heap-trim")
        from gateway.casework import send_review_reminders
        digests = DigestWorker(rt)
        jobs = Jobs(rt, release=lambda: self._release(), purge=lambda: asyncio.to_thread(purge_expired, rt),
                    reminders=lambda: asyncio.to_thread(send_review_reminders, rt), digest=digests.run_once)
        jobs.start()
        imap.start()
        rt.metrics.running = True
        log.info("parentgate listening on %s:%d (%s delivery, %d school(s))", rt.config.smtp.host,
                 rt.config.smtp.port, rt.config.delivery.mode, len(rt.config.schools))
        # systemd (Type=notify): started once the listener accepts; watchdog and queue status meanwhile.
        notifier = Notifier.from_environ(os.environ)
        notifier.ready(f"listening on {rt.config.smtp.host}:{rt.config.smtp.port}")
        watch = asyncio.create_task(watch_gateway(notifier, rt, self.stopping), name="notify")
        await self.stopping.wait()

        notifier.stopping()
        log.info("stopping: no new connections; finishing work in progress")
        server.close()
        await server.wait_closed()
        if ops is not None:
            await ops.close()
        if console is not None:
            await console.close()
        jobs.shutdown()
        await imap.stop()
        await inbox.stop()
        delivery.stop()
        # The triage loop ends after the batch in hand is written (a batch cut off mid-write would
        # lose the claim made with it); it is cancelled only if that takes unreasonably long.
        self.triage_wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(tasks[0]), 30)
        except asyncio.TimeoutError:
            log.warning("triage did not finish its batch within 30 s; stopping it")
            tasks[0].cancel()
        except Exception:  # noqa: BLE001 - the loop logs its own failures
            pass
        await asyncio.gather(*tasks, watch, return_exceptions=True)
        notifier.close()
        leases.cancel()
        trimmer.cancel()
        try:
            await delivery.release_handed()
        except Exception:  # noqa: BLE001 - the leases then expire, as after a crash
            log.exception("could not give back the outbox rows handed to delivery")
        try:
            await triage.unclaim()
        except Exception:  # noqa: BLE001 - the leases then expire, as after a crash
            log.exception("could not give back the triage batch claimed ahead")
        await asyncio.to_thread(self.judges.close)
        await primary.close()
        if outbound is not None:
            await outbound.close()
        rt.db.close()
        log.info("stopped")
        return 0

    async def _start_ops(self, server: Listener, listen: tuple[str, int]) -> OpsServer | None:
        """/metrics and /healthz, when [metrics] asks for them; a port in use stops the start-up."""
        rt = self.rt
        if rt.config.metrics is None:
            return None
        health = Health(rt.db, rt.metrics, lambda: server, listen)
        ops = OpsServer(rt.metrics, health, rt.db, rt.clock, tuple(m.name for m in rt.config.mailboxes))
        host, port = rt.config.metrics.host, rt.config.metrics.port
        try:
            await ops.start(host, port)
        except OSError as exc:
            server.close()
            raise StartupError(f"cannot serve metrics on {host}:{port}: {exc.strerror or one_line(exc)}") from None
        return ops

    async def _release(self) -> int:
        return await release_all_due(self.rt)


async def start_console(rt: Runtime, server: asyncio.Server | None = None) -> "ConsoleServer | None":
    """The Head of School's console, when [console] asks for it; a port in use stops the start-up."""
    if rt.config.console is None:
        return None
    from gateway.web.server import ConsoleServer
    console = ConsoleServer(rt, delivery_transport(rt.config))
    try:
        await console.start()
    except OSError as exc:
        if server is not None:
            server.close()
        c = rt.config.console
        raise StartupError(f"cannot serve the console on {c.host}:{c.port}: {exc.strerror or one_line(exc)}") from None
    return console


async def console_alone(rt: Runtime) -> int:
    """`parentgate console`: the console without the mail pipeline (another host, a shared database)."""
    from gateway.web.server import serve_alone
    c = rt.config.console
    assert c is not None
    try:
        return await serve_alone(rt, delivery_transport(rt.config))
    except OSError as exc:
        raise StartupError(f"cannot serve the console on {c.host}:{c.port}: {exc.strerror or one_line(exc)}") from None
