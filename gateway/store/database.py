"""The database handle: engine, sessions, and the thread where blocking database work runs.

Nothing blocks the event loop: async callers hand a function of a Session to `run()`, which executes it
in a transaction on the database threads. SQLite gets one thread (one writer at a time anyway);
PostgreSQL gets several.

The threads take work by priority, then in order of arrival: the intake's commits (`URGENT`) go before
triage and delivery batches waiting for the same thread, so a sender's 250 never queues behind them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import weakref
from concurrent.futures import Future
from queue import PriorityQueue
from typing import Callable, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.db import check_sqlite_file, is_sqlite, make_engine, upgrade

T = TypeVar("T")
log = logging.getLogger(__name__)
URGENT, NORMAL = 0, 1


class PriorityExecutor:
    """A fixed set of threads running callables by (priority, arrival).

    The threads hold the queue, not the executor: an executor dropped without `shutdown()` is
    collected, and its threads then finish what is queued and end (like ThreadPoolExecutor's).
    """

    def __init__(self, workers: int, name: str) -> None:
        self._queue: PriorityQueue[tuple[int, int, Callable[[], None] | None]] = PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._threads = [threading.Thread(target=_work, args=(self._queue,), name=f"{name}_{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()
        self._stop = weakref.finalize(self, _stop_markers, self._queue, self._order, workers)

    def submit(self, fn: Callable[[], T], priority: int = NORMAL) -> Future[T]:
        if self._closed:
            raise RuntimeError("the database executor is shut down")
        future: Future[T] = Future()

        def task() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._queue.put((priority, next(self._order), task))
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Work already submitted runs first (the stop markers sort after every priority)."""
        self._closed = True
        self._stop()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()


def _work(queue: PriorityQueue[tuple[int, int, Callable[[], None] | None]]) -> None:
    while True:
        _, _, task = queue.get()
        if task is None:
            return
        task()
        del task


def _stop_markers(queue: PriorityQueue[tuple[int, int, Callable[[], None] | None]], order: itertools.count[int],
                  workers: int) -> None:
    for _ in range(workers):
        queue.put((NORMAL + 1, next(order), None))


class Database:
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        if migrate:
            upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.single_writer = is_sqlite(self.engine)
        self._pool = PriorityExecutor(1 if self.single_writer else 4, "parentgate-db")

    def session(self) -> Session:
        return self._sessions()

    def transact(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in one transaction, synchronously (CLI and the database thread)."""
        with self._sessions() as session, session.begin():
            return fn(session)

    async def run(self, fn: Callable[[Session], T], *, priority: int = NORMAL) -> T:
        """`fn` in one transaction on a database thread."""
        return await self.call(lambda: self.transact(fn), priority=priority)

    async def call(self, fn: Callable[[], T], *, priority: int = NORMAL) -> T:
        """Any blocking callable on a database thread (it opens its own transactions, if any)."""
        return await asyncio.wrap_future(self._pool.submit(fn, priority))

    def ping(self) -> None:
        """Raise unless the database answers: a round trip to PostgreSQL, or a read of the SQLite file
        where it was opened (an open connection would go on using a file that was removed or renamed)."""
        path = self.engine.url.database
        if self.single_writer and path and path != ":memory:":
            check_sqlite_file(path)
            return
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
