"""The database handle: engine, sessions, and the thread where blocking database work runs.

Nothing blocks the event loop: async callers hand a function of a Session to `run()`, which executes it
in a transaction on the database thread pool. SQLite gets one thread (one writer at a time anyway);
PostgreSQL gets several.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.db import is_sqlite, make_engine, upgrade

T = TypeVar("T")
log = logging.getLogger(__name__)


class Database:
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        if migrate:
            upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.single_writer = is_sqlite(self.engine)
        self._pool = ThreadPoolExecutor(max_workers=1 if self.single_writer else 4,
                                        thread_name_prefix="parentgate-db")

    def session(self) -> Session:
        return self._sessions()

    def transact(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in one transaction, synchronously (CLI and the database thread)."""
        with self._sessions() as session, session.begin():
            return fn(session)

    async def run(self, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.transact, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
