"""Parsing and the content rules in worker processes, so they use another core and not the daemon's GIL.

`judge` is pure CPU work (MIME parsing, language identification, regular expressions). In a thread it
competes for the GIL with the SMTP listener and the database thread; in a process it runs beside them.
Each worker process loads the rules once, from the same directory as the daemon, and answers with the
digest of the rules it used: a batch judged with other rules than the daemon's (the files changed on
disk after the daemon loaded them) is judged again in a thread with the daemon's own rules, so the
digest stored with every finding is always the digest of the rules that produced it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Union

from gateway.store.raws import RawReader, StoredRaw
from gateway.triage.rules import RuleSet, load_rules
from gateway.workers.evaluate import Judged, judge
from gateway.workers.lifeline import die_with

log = logging.getLogger("parentgate.judging")
Results = list["Judged | BaseException"]
# A message to judge: its bytes, or for a large one a reference the judge reads from the database, so
# that it is not copied through the daemon and pickled to the worker.
RawInput = Union[bytes, StoredRaw]


class JudgeFailed(Exception):
    """Stands in for an exception raised while judging that cannot be sent back between processes."""


class WorkerDied(Exception):
    """The result for a message whose judging, alone in a worker process, killed that process."""


class _WorkerRules:
    """The rules of one worker process, loaded by the pool's initializer.

    Process-local by nature: a pool worker keeps nothing else between tasks, and sending the rules
    with every task would mean pickling the language models each time.
    """

    rules: RuleSet | None = None
    reader: RawReader | None = None


def _load_worker_rules(rules_dir: str, daemon_pid: int, database_url: str | None = None) -> None:
    # SIGTERM ends a worker at once (systemd's stop, an operator's kill): the daemon then gives the
    # batch in hand back untried. Ctrl-C and SIGHUP reach the whole foreground group but are the
    # daemon's to handle (it stops or reloads these workers itself).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    die_with(daemon_pid)
    _WorkerRules.rules = load_rules(Path(rules_dir))
    _WorkerRules.reader = RawReader(database_url) if database_url else None


def _read_in_worker(ref: StoredRaw) -> bytes:
    if _WorkerRules.reader is None:
        raise LookupError("this judge process has no database to read large messages from")
    return _WorkerRules.reader.read(ref)


def _judge_in_worker(raws: list[RawInput]) -> tuple[str, Results]:
    rules = _WorkerRules.rules
    assert rules is not None, "the pool initializer loads the rules"
    return rules.digest, [_portable(result) for result in judge_each(raws, lambda raw: judge(raw, rules),
                                                                     _read_in_worker)]


def _portable(result: Judged | BaseException) -> Judged | BaseException:
    """The result itself, or for an exception that would not survive pickling, a JudgeFailed naming it."""
    if not isinstance(result, BaseException):
        return result
    try:
        pickle.loads(pickle.dumps(result))
        return result
    except Exception:  # noqa: BLE001 - any pickling problem: send the name only
        return JudgeFailed(result.__class__.__name__)


def _warm_up() -> None:
    """A no-op task: starting the workers (and loading their rules) before the first mail arrives."""


def judge_each(raws: list[RawInput], fn: Callable[[bytes], Judged],
               read: Callable[[StoredRaw], bytes] | None = None) -> Results:
    """Each message's judgement, or the exception it raised (recorded per message by the caller).
    A large message is read (with `read`) just before it is judged, and dropped after."""
    results: Results = []
    for raw in raws:
        try:
            if isinstance(raw, StoredRaw):
                if read is None:
                    raise LookupError("no reader for a large message's bytes")
                raw = read(raw)
            results.append(fn(raw))
        except Exception as exc:  # noqa: BLE001 - recorded per message by the triage worker
            results.append(exc)
    return results


def default_workers() -> int:
    """One core stays with the daemon's own process (SMTP, database, delivery); at most two workers."""
    return max(1, min(2, (os.cpu_count() or 1) - 1))


class JudgePool:
    """A process pool for `judge`, recreated on a rules reload and after a worker died."""

    def __init__(self, rules_dir: Path, *, workers: int | None = None,
                 task: Callable[[list[RawInput]], tuple[str, Results]] | None = None,
                 database_url: str | None = None) -> None:
        self._rules_dir = rules_dir
        # Where the workers read large messages from (see RawInput).
        self._database_url = database_url
        self._workers = workers or default_workers()
        # What a worker runs per chunk; tests substitute a module-level function that crashes on cue.
        self._task = task or _judge_in_worker
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the daemon has threads (database, asyncio helpers) whose locks a forked
        # child could inherit held. spawn starts multiprocessing's resource tracker too (for the
        # pool's semaphores); it holds only the reading end of a pipe whose writing ends the daemon
        # and these workers hold, so it exits once they have all died (see `die_with`).
        pool = ProcessPoolExecutor(max_workers=self._workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_load_worker_rules,
                                   initargs=(str(self._rules_dir), os.getpid(), self._database_url))
        for _ in range(self._workers):
            pool.submit(_warm_up)
        return pool

    def reload(self, rules_dir: Path) -> None:
        """New rules: new workers. Batches already running on the old workers finish there."""
        old = self._pool
        self._rules_dir = rules_dir
        self._pool = self._new_pool()
        old.shutdown(wait=False)

    async def judge_all(self, raws: list[RawInput], rules: RuleSet,
                        read: Callable[[StoredRaw], bytes] | None = None) -> Results:
        """Every message judged, in order; `rules` are the daemon's, used if a worker's differ."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        chunks = [raws[i::self._workers] for i in range(self._workers) if raws[i::self._workers]]
        try:
            answers = await asyncio.gather(*(loop.run_in_executor(pool, self._task, c) for c in chunks))
        except BrokenProcessPool:
            # A worker died (killed, or out of memory on a hostile message): new workers take over, and
            # the caller finds out which message, if any, did it (`judge_alone`).
            log.error("a triage worker process died; starting new ones")
            if pool is self._pool:
                self._pool = self._new_pool()
                pool.shutdown(wait=False)
            raise
        if any(digest != rules.digest for digest, _ in answers):
            log.warning("worker rules differ from the daemon's (changed on disk?); judging in-process")
            return await asyncio.to_thread(judge_each, raws, lambda raw: judge(raw, rules), read)
        # Undo the round-robin split: message i went to chunk i % n, at position i // n.
        results: Results = []
        for i in range(len(raws)):
            results.append(answers[i % len(chunks)][1][i // len(chunks)])
        return results

    async def judge_alone(self, raws: list[RawInput], rules: RuleSet,
                          stopping: Callable[[], bool] = lambda: False) -> Results:
        """Every message judged alone, after a worker died on their batch: the one that kills a worker
        again gets WorkerDied as its result (the others are judged), so only it is counted as failed.
        A batch of one was already alone.

        BrokenProcessPool is raised instead when the gateway is stopping (its SIGTERM ends workers too)."""
        if len(raws) == 1:
            return [WorkerDied("a triage worker process died judging this message")]
        results: Results = []
        for raw in raws:
            try:
                results += await self.judge_all([raw], rules)
            except BrokenProcessPool:
                if stopping():
                    raise
                results.append(WorkerDied("a triage worker process died judging this message"))
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
