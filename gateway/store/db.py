"""Engine creation and schema upgrades: SQLite in WAL mode by default, PostgreSQL when configured."""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import quote
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine whose errors never echo SQL parameters: those would be message bytes, i.e. personal data."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=8, max_overflow=8, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN instead so
        # that claim-then-update can never deadlock between two connections.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself (see the "begin" listener).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we answer 250, even across a power cut, not only a crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def check_sqlite_file(path: str) -> None:
    """Raise unless the SQLite file at `path` is there, writable, and readable as a database.

    A fresh read-only connection reads the header; in WAL mode it never waits for a writer."""
    if not os.access(path, os.R_OK | os.W_OK):
        raise OSError(f"{path} is missing or not readable and writable")
    with closing(sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=1)) as connection:
        connection.execute("PRAGMA schema_version").fetchone()


def safe_url(url: str) -> str:
    """The database URL with any password hidden, for messages to the operator."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as its scheme only
        return url.partition(":")[0] + ":..."


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def upgrade(engine: Engine) -> None:
    """Apply every alembic migration (idempotent); called at start-up and by `db upgrade`."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_engine"] = engine
    command.upgrade(cfg, "head")
