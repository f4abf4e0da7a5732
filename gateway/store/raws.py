"""A message's raw bytes apart from its row, so a large message is not carried along with every claim.

Claims load rows without their bytes; the bytes of small messages are then read in one query for the
whole batch, while a large message's bytes are read only where they are used: by the judge process
that parses it (on its own connection, `RawReader`), or in the transaction that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, inspect, select
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import NullPool

from gateway.store.models import MessageRow

# Messages up to this size travel with their rows; larger ones are read where they are used.
LARGE = 1024 * 1024


@dataclass(frozen=True)
class StoredRaw:
    """Stands for a message's bytes still in the database (sent to a judge process instead of them)."""

    message_id: int


def raw_loaded(row: MessageRow) -> bool:
    return "raw" not in inspect(row).unloaded


def load_small_raws(session: Session, rows: list[MessageRow], limit: int = LARGE) -> None:
    """Fill in the bytes of the rows no larger than `limit`, in one query; larger ones stay unloaded."""
    by_id = {r.id: r for r in rows if r.size <= limit and not raw_loaded(r)}
    if not by_id:
        return
    for message_id, raw in session.execute(select(MessageRow.id, MessageRow.raw).where(MessageRow.id.in_(by_id))):
        set_committed_value(by_id[message_id], "raw", raw)


def forget_large_raw(row: MessageRow, limit: int = LARGE) -> None:
    """Drop a large message's bytes from its row (read again if needed), once they have been used."""
    session = object_session(row)
    if session is not None and row.size > limit and raw_loaded(row):
        session.expire(row, ["raw"])


def read_raw(session: Session, message_id: int) -> bytes:
    return bytes(session.scalar(select(MessageRow.raw).where(MessageRow.id == message_id)) or b"")


class RawReader:
    """Reads messages' bytes by id on a connection of its own (in a judge process), read-only: it never
    takes SQLite's write lock, and holds no connection between reads."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: Engine | None = None

    def read(self, ref: StoredRaw) -> bytes:
        if self._engine is None:
            args: dict[str, Any] = {"timeout": 30} if self._url.startswith("sqlite") else {}
            self._engine = create_engine(self._url, poolclass=NullPool, hide_parameters=True, connect_args=args)
        with self._engine.connect() as conn:
            raw = conn.execute(select(MessageRow.raw).where(MessageRow.id == ref.message_id)).scalar()
        if raw is None:
            raise LookupError(f"message {ref.message_id} is not in the database")
        return bytes(raw)
