"""The order journal's storage: its SQLite schema, migrations, connection and transactions.

:class:`~genesis.orders.journal.Journal` (whose docstring has the rules) keeps orders, their
events and the outbox in the database this module opens and migrates. Everything here is
synchronous and runs in the journal's worker thread.

- :func:`open_database` opens the file with ``busy_timeout``, WAL and ``synchronous=FULL``
  (a committed intent survives a power cut) and foreign keys on, then migrates it.
- :data:`MIGRATIONS` is the schema, plain SQL applied one version per transaction and tracked
  in ``PRAGMA user_version`` (:func:`migrate`); a database newer than this code raises
  :class:`SchemaVersionError`.
- :func:`transaction` is one ``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken first,
  so a change cannot fail half-way on a busy database, and a failure rolls all of it back.

The SQLite-only pieces of the journal are here: the PRAGMAs (``user_version`` would become a
version table on PostgreSQL), ``BEGIN IMMEDIATE`` and the DDL types (``INTEGER PRIMARY KEY`` →
an identity column, ``BLOB`` → ``BYTEA``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from typing import TYPE_CHECKING, Final

from genesis.errors import GenesisError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MIGRATIONS",
    "JournalError",
    "SchemaVersionError",
    "migrate",
    "open_database",
    "transaction",
]

logger = logging.getLogger("genesis.orders.journal")

BUSY_TIMEOUT_MS: Final = 5000
"""How long a statement waits for another connection's lock (a reader, a backup tool)."""

MIGRATIONS: Final[tuple[str, ...]] = (
    # v1: the order rows, their event history, the exchangeInfo cache.
    """
    CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        prefix TEXT NOT NULL,
        created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
    );
    CREATE TABLE orders (
        id INTEGER PRIMARY KEY,
        client_order_id TEXT UNIQUE,  -- NULL only inside the intent's transaction
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        type TEXT NOT NULL,
        request TEXT,                 -- JSON, NULL for an external order
        status TEXT NOT NULL,
        exchange_status TEXT,
        exchange_order_id BIGINT,
        filled_quantity TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        external INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE order_events (
        order_id INTEGER NOT NULL REFERENCES orders (id),
        seq INTEGER NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT,
        status TEXT NOT NULL,
        exchange_status TEXT,
        filled_quantity TEXT NOT NULL,
        payload TEXT,
        reason TEXT,
        PRIMARY KEY (order_id, seq)
    );
    CREATE TABLE exchange_info_cache (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        body BLOB NOT NULL,
        fetched_ms BIGINT NOT NULL
    );
    """,
    # v2: when the request left (for the unknown-outcome resolver), backfilled from the SENT
    # events; an index for unfinished().
    """
    ALTER TABLE orders ADD COLUMN sent_at_ms BIGINT;
    UPDATE orders SET sent_at_ms = (
        SELECT MAX(e.at_ms) FROM order_events e WHERE e.order_id = orders.id AND e.kind = 'SENT'
    );
    CREATE INDEX orders_status ON orders (status);
    """,
    # v3: the outbox of order events for the NATS bridge (genesis.bridge): each row waits here
    # until the broker acknowledged it, across broker outages and restarts.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_ms BIGINT NOT NULL
    );
    """,
)
"""The schema, one SQL script per version (``;``-separated statements, no ``;`` in literals or
comments). Version *n* is ``MIGRATIONS[:n]`` applied in order; append, never edit a released one."""


class JournalError(GenesisError):
    """The journal failed: a database error (chained), corrupt contents, or a misuse."""


class SchemaVersionError(JournalError):
    """The journal was written by a newer Genesis: its schema version is unknown here."""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back if it (or COMMIT) raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()  # a no-op when SQLite has ended the transaction itself
        raise


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to ``len(MIGRATIONS)``, one version per transaction; the version.

    Raises:
        SchemaVersionError: the schema is newer than :data:`MIGRATIONS`.
    """
    while True:
        with transaction(conn):
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise SchemaVersionError(
                    f"journal schema version {version} is newer than this Genesis knows "
                    f"({len(MIGRATIONS)}): upgrade Genesis"
                )
            if version == len(MIGRATIONS):
                return version
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
        logger.info("journal.migrated version=%d", version + 1)


def open_database(path: str) -> tuple[sqlite3.Connection, int]:
    """The journal's database at ``path``, opened and migrated; and its schema version.

    Raises:
        sqlite3.Error: it cannot be opened or migrated (the connection is closed).
        SchemaVersionError: its schema is newer than this code.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        conn.execute("PRAGMA journal_mode = WAL")  # ":memory:" stays "memory": nothing to share
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn, migrate(conn)
    except BaseException:
        conn.close()
        raise
