"""The order journal: every order's intent and each change after it, on disk, in SQLite.

The order task writes an order's *intent* and commits it before the request leaves the process;
every later fact (sent, acknowledged, filled, unknown outcome, resolution) is appended as an
event, and the order's current row is updated in the same transaction. So an order is never lost
(its intent is on disk first) and never placed twice for one intent (:meth:`Journal.record_sent`
is a compare-and-set: an intent is claimed for sending once).

Client order ids are ``<prefix>-<row id>``: the prefix is 8 random ``[a-z0-9]`` characters drawn
when the journal is created and kept in it, so ids stay unique across restarts and across several
Genesis processes (each with its own journal) trading one account. A row id has at most 19 digits
(SQLite's rowid is a signed 64-bit integer), so an id has at most 8 + 1 + 19 = 28 characters and
always matches Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$``.

- One ``sqlite3`` connection, used only from worker threads (``trio.to_thread.run_sync``), one
  call at a time under a :class:`trio.Lock`: the event loop never waits on the disk.
- WAL mode with ``synchronous=FULL``: a committed intent survives a power cut, not only a crash
  (NORMAL in WAL mode may lose the last commits, and a lost intent is an order nobody accounts
  for; an fsync per order is cheap next to Binance's order rate). Foreign keys on. The storage
  (connection, schema, migrations, transactions) is :mod:`genesis.orders.journal_schema`.
- Every change is one ``BEGIN IMMEDIATE`` … ``COMMIT`` (the write lock is taken first, so a
  change cannot fail half-way on a busy database); a failure rolls all of it back.
- Decimals are TEXT in positional notation (:func:`~genesis.models.codec.decimal_to_wire`), never
  REAL, and read back exactly. Requests and reported orders are JSON text in the same form.
- The schema is :data:`MIGRATIONS`, plain SQL applied one version per transaction and tracked in
  ``PRAGMA user_version``; a journal newer than this code raises :class:`SchemaVersionError`.
- The *outbox* (:meth:`Journal.outbox_put`, :meth:`~Journal.outbox_pending`,
  :meth:`~Journal.outbox_done`) keeps order events for the NATS bridge until the broker has
  acknowledged them, so a broker outage or a restart loses none. Once the bridge has called
  :meth:`Journal.keep_updates_in_outbox`, the message of an
  :class:`~genesis.models.events.OrderUpdate` (:meth:`Journal.outbox_message`) given to a
  ``record_*`` method as ``outbox=`` goes into the outbox *in the transaction that journals the
  update*: an update the journal has is never missing from the bridge, even when the process
  dies before the bus hands it to the bridge.
  Balance events have no record; once the bridge has called
  :meth:`Journal.keep_balances_in_outbox`, :meth:`Journal.keep_balances` puts each in the outbox
  before it is published, for the same reason.

Portability to PostgreSQL: the statements (``INSERT … RETURNING``, ``ON CONFLICT … DO UPDATE``,
a correlated ``UPDATE``) are standard apart from the ``?`` placeholders; the SQLite-only pieces
are in :mod:`~genesis.orders.journal_schema`. The :class:`Journal` interface names no SQLite
concept.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import sqlite3
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar

import attrs
import cattrs
import orjson
import trio

from genesis.models.codec import decimal_to_wire, parse_decimal
from genesis.models.events import AccountBalances, OrderUpdate, OrderUpdateSource
from genesis.models.orders import (
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    is_valid_client_order_id,
)
from genesis.orders.journal_runner import JournalRunner
from genesis.orders.journal_schema import (
    BUSY_TIMEOUT_MS,
    MIGRATIONS,
    JournalError,
    SchemaVersionError,
    open_database,
)
from genesis.orders.journal_schema import transaction as _transaction

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    from genesis.models.orders import Order

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DEFAULT_JOURNAL_PATH",
    "EXCHANGE_INFO_MAX_AGE_MS",
    "MIGRATIONS",
    "AlreadySentError",
    "DuplicateOrderError",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalEvent",
    "JournalEventKind",
    "JournalStatistics",
    "OrderNotFoundError",
    "OutboxEntry",
    "OutboxMessage",
    "SchemaVersionError",
    "exchange_info_is_fresh",
    "open_journal",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_JOURNAL_PATH: Final = "genesis.db"
"""Where the journal lives unless configured (``GENESIS_DB``)."""
EXCHANGE_INFO_MAX_AGE_MS: Final = 3_600_000
"""A cached exchangeInfo older than this is refetched (so is one after a filter rejection)."""
_PREFIX_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
_UNFINISHED: Final = (OrderStatus.PENDING, OrderStatus.PARTIAL, OrderStatus.UNKNOWN)
_UNFINISHED_SQL: Final = f"status IN ({', '.join(repr(s.value) for s in _UNFINISHED)})"
_OUTBOX_INSERT: Final = (
    "INSERT INTO outbox (subject, msg_id, payload, created_ms) VALUES (?, ?, ?, ?)"
)
_OutboxRow: TypeAlias = tuple[str, str, bytes, int]


# The journal's own JSON form of requests and reported orders (not the wire's: one owner each).
_json = cattrs.Converter()
_json.register_unstructure_hook(Decimal, decimal_to_wire)
_json.register_structure_hook(Decimal, lambda value, _type: parse_decimal(value))


class DuplicateOrderError(JournalError):
    """An order with this client order id is journaled already: this is not a new intent."""


class OrderNotFoundError(JournalError):
    """No order with this client order id is in the journal."""


class AlreadySentError(JournalError):
    """The intent was claimed for sending before (or is no fresh intent): never send it again."""


class JournalEventKind(enum.Enum):
    """What a :class:`JournalEvent` records."""

    INTENT = "INTENT"  # the order was asked for; committed before anything is sent
    SENT = "SENT"  # the request is about to leave (claimed once)
    UPDATE = "UPDATE"  # the exchange reported on the order (REST, user stream, reconcile)
    UNKNOWN = "UNKNOWN"  # the placement's outcome was lost
    RESOLVED = "RESOLVED"  # a report that settled an unknown outcome
    EXTERNAL = "EXTERNAL"  # reconciliation found an order the journal never saw


@attrs.frozen(kw_only=True)
class JournalEntry:
    """An order as the journal has it now.

    ``request`` (with ``client_order_id`` set) is ``None`` for an external order, whose request
    the journal never saw. ``created_ms``/``updated_ms`` are the caller's ``now_ms`` of the first
    record and of the last change of status, fill or exchange id. ``sent_at_ms`` is ``None``
    until the intent is claimed for sending: after a restart, such an order never left.
    """

    id: int
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    request: OrderRequest | None
    status: OrderStatus
    exchange_status: str | None
    exchange_order_id: int | None
    filled_quantity: Decimal
    created_ms: int
    updated_ms: int
    sent_at_ms: int | None
    external: bool


@attrs.frozen(kw_only=True)
class JournalEvent:
    """One entry of an order's history, numbered from 1 by ``seq``.

    ``status``, ``exchange_status`` and ``filled_quantity`` are what the event reported (a stale
    report leaves the row as it was); ``payload`` is JSON text: the request, the order as
    reported, or the unknown outcome's ``sent_at_ms``.
    """

    order_id: int
    seq: int
    at_ms: int
    kind: JournalEventKind
    source: OrderUpdateSource | None
    status: OrderStatus
    exchange_status: str | None
    filled_quantity: Decimal
    payload: str | None
    reason: str | None


@attrs.frozen(kw_only=True)
class JournalStatistics:
    """Counters of an open journal, kept in memory (reading them never touches the disk).

    ``outbox`` is the number of messages waiting in the outbox for the broker;
    ``outbox_unencodable`` counts the order updates and balance events the encoder failed on
    (journaled or published without their outbox message).
    """

    path: str
    schema_version: int
    orders: int
    unfinished: int
    events: int
    outbox: int = 0
    outbox_unencodable: int = 0


@attrs.frozen(kw_only=True)
class OutboxMessage:
    """A message for the broker, kept until it is acknowledged (:meth:`Journal.outbox_put`).

    ``subject`` and ``msg_id`` are the NATS subject and ``Nats-Msg-Id``; ``payload`` the body.
    """

    subject: str
    msg_id: str
    payload: bytes


@attrs.frozen(kw_only=True)
class OutboxEntry:
    """An :class:`OutboxMessage` in the outbox: ``id`` orders the entries (oldest first)."""

    id: int
    message: OutboxMessage
    created_ms: int


def _outbox_rows(message: OutboxMessage | None, now_ms: int) -> list[_OutboxRow]:
    if message is None:
        return []
    return [(message.subject, message.msg_id, message.payload, now_ms)]


def exchange_info_is_fresh(fetched_ms: int, *, now_ms: int) -> bool:
    """Whether an exchangeInfo fetched at ``fetched_ms`` may still be used at ``now_ms``."""
    return now_ms - fetched_ms < EXCHANGE_INFO_MAX_AGE_MS


def _stage(status: OrderStatus, exchange_status: str | None) -> int:
    """How far an order has got; a report never moves an order's status to a lower stage.

    Reports arrive out of order (REST answers race the user stream): intent < unknown outcome <
    live on the exchange < partially filled < terminal by a local conclusion (a rejection, -2013
    after recvWindow) < terminal as the exchange reported it.
    """
    if status.is_terminal:
        return 5 if exchange_status is not None else 4
    if status is OrderStatus.PARTIAL:
        return 3
    if exchange_status is not None:
        return 2
    return 1 if status is OrderStatus.UNKNOWN else 0


def _dumps(value: object) -> str:
    return orjson.dumps(_json.unstructure(value)).decode()


def _entry(row: sqlite3.Row) -> JournalEntry:
    try:
        cid, request = row["client_order_id"], row["request"]
        if request is not None:
            fields = {**orjson.loads(request), "client_order_id": cid}
            request = _json.structure(fields, OrderRequest)
        return JournalEntry(
            id=row["id"],
            client_order_id=cid,
            symbol=row["symbol"],
            side=OrderSide(row["side"]),
            type=OrderType(row["type"]),
            request=request,
            status=OrderStatus(row["status"]),
            exchange_status=row["exchange_status"],
            exchange_order_id=row["exchange_order_id"],
            filled_quantity=parse_decimal(row["filled_quantity"]),
            created_ms=row["created_ms"],
            updated_ms=row["updated_ms"],
            sent_at_ms=row["sent_at_ms"],
            external=bool(row["external"]),
        )
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise JournalError(f"corrupt journal order row {row['id']}: {exc!r}") from exc


def _event(row: sqlite3.Row) -> JournalEvent:
    try:
        source = row["source"]
        return JournalEvent(
            order_id=row["order_id"],
            seq=row["seq"],
            at_ms=row["at_ms"],
            kind=JournalEventKind(row["kind"]),
            source=None if source is None else OrderUpdateSource(source),
            status=OrderStatus(row["status"]),
            exchange_status=row["exchange_status"],
            filled_quantity=parse_decimal(row["filled_quantity"]),
            payload=row["payload"],
            reason=row["reason"],
        )
    except ValueError as exc:
        raise JournalError(f"corrupt journal event {row['order_id']}/{row['seq']}: {exc}") from exc


@contextlib.contextmanager
def _unique(client_order_id: str | None) -> Iterator[None]:
    """A clash on the client order id's UNIQUE constraint becomes :class:`DuplicateOrderError`."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "client_order_id" not in str(exc):
            raise
        raise DuplicateOrderError(f"order {client_order_id!r} is journaled already") from exc


def _connect(path: str) -> Journal:
    conn, version = open_database(path)
    try:
        with _transaction(conn):
            row = conn.execute("SELECT prefix FROM meta WHERE id = 1").fetchone()
            if row is None:
                prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
                conn.execute("INSERT INTO meta (id, prefix) VALUES (1, ?)", (prefix,))
            else:
                prefix = row["prefix"]
        counts = conn.execute(
            "SELECT (SELECT COUNT(*) FROM orders),"
            f" (SELECT COUNT(*) FROM orders WHERE {_UNFINISHED_SQL}),"
            " (SELECT COUNT(*) FROM order_events),"
            " (SELECT COUNT(*) FROM outbox)"
        ).fetchone()
    except BaseException:
        conn.close()
        raise
    journal = Journal(conn, path, prefix, version)
    journal._orders, journal._unfinished, journal._events, journal._outbox = counts
    return journal


class Journal:
    """An open order journal; get one from :func:`open_journal`.

    Each method runs its statements in a worker thread, one call at a time. A call cancelled
    while it waits for its turn does nothing; once its statements run they are not abandoned,
    so a cancelled write has happened entirely or not at all (:meth:`get` tells which).
    Database failures raise :class:`JournalError` (chained); a closed journal raises
    :class:`trio.ClosedResourceError`.
    """

    def __init__(
        self, conn: sqlite3.Connection, path: str, prefix: str, schema_version: int
    ) -> None:
        self._conn, self._path, self._prefix = conn, path, prefix
        self._runner = JournalRunner(conn, inline=path == ":memory:")
        self._schema_version = schema_version
        self._orders = self._unfinished = self._events = self._outbox = 0
        self._encode: Callable[[OrderUpdate], OutboxMessage] | None = None
        self._encode_balances: Callable[[AccountBalances], OutboxMessage] | None = None
        self._unencodable = 0

    @property
    def path(self) -> str:
        return self._path

    @property
    def prefix(self) -> str:
        """The random prefix of this journal's client order ids (kept in the journal)."""
        return self._prefix

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            path=self._path,
            schema_version=self._schema_version,
            orders=self._orders,
            unfinished=self._unfinished,
            events=self._events,
            outbox=self._outbox,
            outbox_unencodable=self._unencodable,
        )

    def keep_updates_in_outbox(self, encode: Callable[[OrderUpdate], OutboxMessage]) -> None:
        """From now on, keep ``encode(update)`` in the outbox with every record given ``update``.

        :meth:`outbox_message` encodes an update with it; a ``record_*`` call given that message
        (``outbox=``) writes it in the transaction that journals the update (all or none), so
        whatever the journal has of an order, the broker gets too (the NATS bridge calls this
        when it starts, for the life of the journal).
        """
        self._encode = encode

    def outbox_message(self, update: OrderUpdate) -> OutboxMessage | None:
        """The broker's message of ``update`` for a ``record_*`` call's ``outbox=``.

        ``None`` until :meth:`keep_updates_in_outbox`, or when the encoder failed (an ERROR
        line, ``statistics().outbox_unencodable``): the broker's copy is lost then, the order's
        record never is.
        """
        if self._encode is None:
            return None
        try:
            return self._encode(update)
        except Exception as exc:  # the broker's copy, never the journal's record, is what fails
            self._unencodable_error(f"client_order_id={update.order.client_order_id}", exc)
            return None

    def keep_balances_in_outbox(self, encode: Callable[[AccountBalances], OutboxMessage]) -> None:
        """From now on, :meth:`keep_balances` keeps ``encode(event)`` in the outbox.

        Balance events have no journal record; the NATS bridge calls this at start so that a
        balance event is on disk before it is on the bus, like an order update.
        """
        self._encode_balances = encode

    async def keep_balances(self, event: AccountBalances, *, now_ms: int) -> bool:
        """Put ``event``'s broker message in the outbox (one transaction); whether it did.

        ``False`` until :meth:`keep_balances_in_outbox`, or when the encoder failed (an ERROR
        line, ``statistics().outbox_unencodable``): the event then reaches the broker only if
        the bridge reads it from the bus.
        """
        if self._encode_balances is None:
            return False
        try:
            message = self._encode_balances(event)
        except Exception as exc:
            self._unencodable_error(f"balances_time_ms={event.update_time_ms}", exc)
            return False
        await self.outbox_put([message], now_ms=now_ms)
        return True

    def _unencodable_error(self, what: str, exc: Exception) -> None:
        self._unencodable += 1
        logger.error(
            "journal.outbox_unencodable %s error=%s: the event will not reach the broker"
            " through the outbox",
            what,
            type(exc).__name__,
            exc_info=exc,
        )

    async def _run(self, work: Callable[[], _T]) -> _T:
        try:
            return await self._runner.run(work)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {type(exc).__name__}: {exc}") from exc

    # The helpers below run in the worker thread, under the lock. Counters change after COMMIT.

    def _find(self, client_order_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(
            "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        return row

    def _row(self, client_order_id: str) -> sqlite3.Row:
        row = self._find(client_order_id)
        if row is None:
            raise OrderNotFoundError(f"no order {client_order_id!r} in the journal")
        return row

    def _append(
        self,
        order_id: int,
        kind: JournalEventKind,
        at_ms: int,
        reported: tuple[OrderStatus, str | None, str],
        source: OrderUpdateSource | None = None,
        payload: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Append an event; ``reported`` is (status, exchange status, filled quantity)."""
        status, exchange_status, filled = reported
        self._conn.execute(
            "INSERT INTO order_events (order_id, seq, at_ms, kind, source, status,"
            " exchange_status, filled_quantity, payload, reason)"
            " SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?"
            " FROM order_events WHERE order_id = ?",
            (
                order_id,
                at_ms,
                kind.value,
                None if source is None else source.value,
                status.value,
                exchange_status,
                filled,
                payload,
                reason,
                order_id,
            ),
        )

    def _put(self, rows: Sequence[_OutboxRow]) -> None:
        if rows:
            self._conn.executemany(_OUTBOX_INSERT, rows)

    def _counted(
        self, old: OrderStatus | None, new: OrderStatus, *, orders: int = 0, outbox: int = 0
    ) -> None:
        self._orders += orders
        self._events += 1
        self._unfinished += (new in _UNFINISHED) - (old in _UNFINISHED)
        self._outbox += outbox

    async def record_intent(self, request: OrderRequest, *, now_ms: int) -> JournalEntry:
        """Journal a new order (PENDING, one INTENT event), committed before this returns.

        The client order id is ``request.client_order_id`` if set, else ``<prefix>-<id>``;
        ``entry.request`` carries it. Send the order only after this returns.

        Raises:
            DuplicateOrderError: the client order id is journaled already (nothing is written).
            JournalError: the given id has this journal's ``<prefix>-`` form (reserved), or the
                database failed (nothing is written).
        """
        supplied = request.client_order_id
        request_json = _dumps(request)

        def work() -> JournalEntry:
            if supplied is not None and supplied.startswith(f"{self._prefix}-"):
                # Ours to generate: taking one now would make a later intent's id clash.
                if self._find(supplied) is not None:
                    raise DuplicateOrderError(f"order {supplied!r} is journaled already")
                raise JournalError(f"client order id {supplied!r} is reserved for this journal")
            with _unique(supplied), _transaction(self._conn):
                ((row_id,),) = self._conn.execute(
                    "INSERT INTO orders (client_order_id, symbol, side, type, request, status,"
                    " filled_quantity, created_ms, updated_ms)"
                    " VALUES (?, ?, ?, ?, ?, 'PENDING', '0', ?, ?) RETURNING id",
                    (
                        supplied,
                        request.symbol,
                        request.side.value,
                        request.type.value,
                        request_json,
                        now_ms,
                        now_ms,
                    ),
                ).fetchall()
                cid = supplied or f"{self._prefix}-{row_id:d}"
                assert is_valid_client_order_id(cid), cid  # at most 28 characters of [a-z0-9-]
                self._conn.execute(
                    "UPDATE orders SET client_order_id = ? WHERE id = ?", (cid, row_id)
                )
                pending = (OrderStatus.PENDING, None, "0")
                self._append(row_id, JournalEventKind.INTENT, now_ms, pending, None, request_json)
                entry = _entry(self._row(cid))
            self._counted(None, OrderStatus.PENDING, orders=1)
            return entry

        return await self._run(work)

    async def record_sent(self, client_order_id: str, *, sent_at_ms: int) -> None:
        """Claim a fresh intent for sending, right before the request leaves (once per order).

        ``sent_at_ms`` is the timestamp to be signed; :meth:`record_unknown` may correct it.

        Raises:
            AlreadySentError: claimed before, external, or already beyond the intent.
            OrderNotFoundError: no such order.
        """

        def work() -> None:
            with _transaction(self._conn):
                row = self._row(client_order_id)
                claimed = self._conn.execute(
                    "UPDATE orders SET sent_at_ms = ? WHERE id = ? AND sent_at_ms IS NULL"
                    " AND external = 0 AND status = 'PENDING' AND exchange_status IS NULL",
                    (sent_at_ms, row["id"]),
                ).rowcount
                if claimed != 1:
                    raise AlreadySentError(f"order {client_order_id!r} is not a fresh intent")
                pending = (OrderStatus.PENDING, None, row["filled_quantity"])
                self._append(row["id"], JournalEventKind.SENT, sent_at_ms, pending)
            self._counted(OrderStatus.PENDING, OrderStatus.PENDING)

        await self._run(work)

    async def record_update(
        self,
        order: Order,
        *,
        source: OrderUpdateSource,
        reason: str | None = None,
        now_ms: int,
        outbox: OutboxMessage | None = None,
    ) -> bool:
        """Append what was reported of ``order``; apply it where it moves the order on.

        The event is always appended. The row takes the reported status only if it is further
        along (a terminal order never goes back: a late NEW after FILLED is history only),
        ``filled_quantity`` never decreases, and a missing exchange order id is filled in.
        ``outbox`` (the broker's message of the update to be published,
        :meth:`outbox_message`) goes into the outbox in the same transaction.

        Returns:
            Whether the order's row changed.

        Raises:
            OrderNotFoundError: the journal has no such order (see :meth:`record_external`).
        """
        payload = _dumps(order)
        reported = (order.status, order.exchange_status, decimal_to_wire(order.filled_quantity))
        rows = _outbox_rows(outbox, now_ms)

        def work() -> bool:
            with _transaction(self._conn):
                row = self._row(order.client_order_id)
                old_status, old_filled = OrderStatus(row["status"]), row["filled_quantity"]
                status, exchange_status = old_status, row["exchange_status"]
                if _stage(order.status, order.exchange_status) > _stage(status, exchange_status):
                    status, exchange_status = order.status, order.exchange_status
                exchange_order_id = row["exchange_order_id"]
                if exchange_order_id is None:
                    exchange_order_id = order.exchange_order_id
                filled = max(parse_decimal(old_filled), order.filled_quantity)
                old = (old_status, row["exchange_status"], old_filled, row["exchange_order_id"])
                new = (status, exchange_status, decimal_to_wire(filled), exchange_order_id)
                changed = new != old
                if changed:
                    self._conn.execute(
                        "UPDATE orders SET status = ?, exchange_status = ?, filled_quantity = ?,"
                        " exchange_order_id = ?, updated_ms = ? WHERE id = ?",
                        (
                            status.value,
                            exchange_status,
                            new[2],
                            exchange_order_id,
                            now_ms,
                            row["id"],
                        ),
                    )
                resolved = old_status is OrderStatus.UNKNOWN and status is not OrderStatus.UNKNOWN
                kind = JournalEventKind.RESOLVED if resolved else JournalEventKind.UPDATE
                self._append(row["id"], kind, now_ms, reported, source, payload, reason)
                self._put(rows)
            self._counted(old_status, status, outbox=len(rows))
            return changed

        return await self._run(work)

    async def record_unknown(
        self,
        client_order_id: str,
        *,
        reason: str,
        sent_at_ms: int,
        now_ms: int,
        outbox: OutboxMessage | None = None,
    ) -> bool:
        """Record that the placement's outcome was lost, keeping ``sent_at_ms`` for the resolver.

        ``outbox`` (the message of the UNKNOWN update to be published) goes into the outbox in
        the same transaction if the order did become UNKNOWN.

        Returns:
            Whether the order is now UNKNOWN: ``False`` when the exchange had reported it
            already (the user stream can beat the REST answer), and no resolution is needed.

        Raises:
            OrderNotFoundError: no such order.
        """
        payload = orjson.dumps({"sent_at_ms": sent_at_ms}).decode()
        rows = _outbox_rows(outbox, now_ms)

        def work() -> bool:
            with _transaction(self._conn):
                row = self._row(client_order_id)
                old = OrderStatus(row["status"])
                # The user stream may have reported the order before the REST call gave up on
                # it: only an order the exchange has said nothing about becomes UNKNOWN.
                fresh = _stage(old, row["exchange_status"]) == 0
                status = OrderStatus.UNKNOWN if fresh else old
                self._conn.execute(
                    "UPDATE orders SET status = ?, sent_at_ms = ?, updated_ms = ? WHERE id = ?",
                    (status.value, sent_at_ms, now_ms if fresh else row["updated_ms"], row["id"]),
                )
                reported = (OrderStatus.UNKNOWN, None, row["filled_quantity"])
                kind = JournalEventKind.UNKNOWN
                self._append(row["id"], kind, now_ms, reported, None, payload, reason)
                kept = rows if fresh else []
                self._put(kept)
            self._counted(old, status, outbox=len(kept))
            return fresh

        return await self._run(work)

    async def record_external(
        self, order: Order, *, now_ms: int, outbox: OutboxMessage | None = None
    ) -> JournalEntry:
        """Journal an order found on the exchange that the journal never saw (``external``).

        ``outbox`` (the message of the update to be published) goes into the outbox in the same
        transaction.

        Raises:
            DuplicateOrderError: the journal has an order with its client order id.
        """
        cid, filled = order.client_order_id, decimal_to_wire(order.filled_quantity)
        payload = _dumps(order)
        rows = _outbox_rows(outbox, now_ms)
        if cid.startswith(f"{self._prefix}-"):
            logger.warning(
                "journal.external_own_prefix client_order_id=%s: an id of this journal that it"
                " has no row for (was the journal restored from a copy?)",
                cid,
            )

        def work() -> JournalEntry:
            with _unique(cid), _transaction(self._conn):
                ((row_id,),) = self._conn.execute(
                    "INSERT INTO orders (client_order_id, symbol, side, type, status,"
                    " exchange_status, exchange_order_id, filled_quantity, created_ms,"
                    " updated_ms, external) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING id",
                    (
                        cid,
                        order.symbol,
                        order.side.value,
                        order.type.value,
                        order.status.value,
                        order.exchange_status,
                        order.exchange_order_id,
                        filled,
                        now_ms,
                        now_ms,
                    ),
                ).fetchall()
                reported = (order.status, order.exchange_status, filled)
                kind, source = JournalEventKind.EXTERNAL, OrderUpdateSource.RECONCILE
                self._append(row_id, kind, now_ms, reported, source, payload)
                self._put(rows)
                entry = _entry(self._row(cid))
            self._counted(None, order.status, orders=1, outbox=len(rows))
            return entry

        return await self._run(work)

    async def get(self, client_order_id: str) -> JournalEntry | None:
        """The order with ``client_order_id``, or ``None``."""

        def work() -> JournalEntry | None:
            row = self._find(client_order_id)
            return None if row is None else _entry(row)

        return await self._run(work)

    async def unfinished(self) -> list[JournalEntry]:
        """Orders not yet terminal (PENDING, PARTIAL, UNKNOWN), oldest first, newest last."""
        query = f"SELECT * FROM orders WHERE {_UNFINISHED_SQL} ORDER BY id"
        return await self._run(lambda: [_entry(row) for row in self._conn.execute(query)])

    async def history(self, client_order_id: str) -> list[JournalEvent]:
        """Every event of the order, in journal order.

        Raises:
            OrderNotFoundError: no such order.
        """
        query = "SELECT * FROM order_events WHERE order_id = ? ORDER BY seq"

        def work() -> list[JournalEvent]:
            order_id = self._row(client_order_id)["id"]
            return [_event(row) for row in self._conn.execute(query, (order_id,))]

        return await self._run(work)

    async def cache_exchange_info(self, body: bytes, *, fetched_ms: int) -> None:
        """Keep ``body`` (the raw ``GET /api/v3/exchangeInfo`` answer), replacing the last."""

        def work() -> None:
            with _transaction(self._conn):
                self._conn.execute(
                    "INSERT INTO exchange_info_cache (id, body, fetched_ms) VALUES (1, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET body = excluded.body,"
                    " fetched_ms = excluded.fetched_ms",
                    (body, fetched_ms),
                )

        await self._run(work)

    async def cached_exchange_info(self) -> tuple[bytes, int] | None:
        """The cached exchangeInfo body and its ``fetched_ms``, or ``None``.

        Refetch it when not :func:`exchange_info_is_fresh`, or after a filter rejection.
        """

        def work() -> tuple[bytes, int] | None:
            query = "SELECT body, fetched_ms FROM exchange_info_cache"
            row = self._conn.execute(query).fetchone()
            return None if row is None else (bytes(row["body"]), row["fetched_ms"])

        return await self._run(work)

    async def outbox_put(self, messages: Sequence[OutboxMessage], *, now_ms: int) -> None:
        """Keep ``messages`` in the outbox, in order, in one transaction (all or none)."""
        rows = [(m.subject, m.msg_id, m.payload, now_ms) for m in messages]

        def work() -> None:
            with _transaction(self._conn):
                self._put(rows)
            self._outbox += len(rows)

        await self._run(work)

    async def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        """The oldest ``limit`` messages still in the outbox, oldest first."""
        query = "SELECT * FROM outbox ORDER BY id LIMIT ?"

        def work() -> list[OutboxEntry]:
            return [
                OutboxEntry(
                    id=row["id"],
                    message=OutboxMessage(
                        subject=row["subject"], msg_id=row["msg_id"], payload=bytes(row["payload"])
                    ),
                    created_ms=row["created_ms"],
                )
                for row in self._conn.execute(query, (limit,))
            ]

        return await self._run(work)

    async def outbox_done(self, ids: Sequence[int]) -> None:
        """Remove the entries ``ids`` (the broker acknowledged them); unknown ids are ignored."""
        rows = [(i,) for i in ids]

        def work() -> None:
            with _transaction(self._conn):
                before = self._conn.total_changes
                self._conn.executemany("DELETE FROM outbox WHERE id = ?", rows)
                removed = self._conn.total_changes - before
            self._outbox -= removed

        await self._run(work)

    async def _aclose(self) -> None:
        await self._runner.aclose()
        logger.info("journal.closed path=%s", self._path)


@asynccontextmanager
async def open_journal(
    path: str | os.PathLike[str] = DEFAULT_JOURNAL_PATH,
) -> AsyncIterator[Journal]:
    """Open the journal at ``path``, creating or migrating it; it is closed when the block ends.

    ``":memory:"`` gives a private in-memory journal (tests). The connection is closed on exit,
    also when the block is cancelled or raises.

    Raises:
        SchemaVersionError: the journal's schema is newer than this code.
        JournalError: the database cannot be opened or migrated (a failed migration step is
            rolled back whole, and the journal stays at the version before it).
    """
    name = os.fspath(path)
    try:
        if name == ":memory:":
            await trio.lowlevel.checkpoint()
            journal = _connect(name)
        else:
            journal = await trio.to_thread.run_sync(_connect, name)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {name}: {exc}") from exc
    stats = journal.statistics()
    logger.info(
        "journal.open path=%s version=%d prefix=%s orders=%d unfinished=%d",
        name,
        stats.schema_version,
        journal.prefix,
        stats.orders,
        stats.unfinished,
    )
    try:
        yield journal
    finally:
        await journal._aclose()
