"""Subjects and message ids: where an event goes on JetStream and what makes it the same event.

Pure functions, no I/O. An event's subject is ``genesis.<kind>.<SYMBOL>`` (the kinds are
:data:`KINDS`; account balances, which concern no symbol, go to ``genesis.balance.ACCOUNT``).
Its ``Nats-Msg-Id`` is built from the kind, the symbol and the *exchange's* identity of the
event, never from anything one Genesis process makes up (a fresh order uuid, a receive time, a
latency), so two redundant instances that saw the same event give it the same id, and the
broker's duplicate window keeps it once:

========  =============================================================================
trade     trade id
depth     ``lastUpdateId`` and the number of levels on each side (depth5 vs depth20)
book      the book's ``lastUpdateId``
kline     interval, open time, event time, closed flag
ticker    event time ``E`` and the last trade id
order     client order id, and a digest of everything the exchange reported (status, fills,
          exchange ids, times, source, reason): one id per distinct report
balance   event time, update time, and a digest of the balances
========  =============================================================================
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import orjson

from genesis.models.codec import event_to_record
from genesis.models.events import AccountBalances, OrderUpdate
from genesis.models.market import Depth, Kline, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ACCOUNT_SUBJECT_TOKEN",
    "KINDS",
    "ORDER_KINDS",
    "SUBJECT_PREFIX",
    "kind_of",
    "message_id",
    "subject_for",
]

SUBJECT_PREFIX: Final = "genesis"
ACCOUNT_SUBJECT_TOKEN: Final = "ACCOUNT"
"""The subject's last token for events about the whole account (balances)."""

KINDS: Final[Mapping[type, str]] = MappingProxyType(
    {
        Trade: "trade",
        Ticker: "ticker",
        Depth: "depth",
        Kline: "kline",
        OrderBook: "book",
        OrderUpdate: "order",
        AccountBalances: "balance",
    }
)
"""The bus event types the bridge carries, by their lowercase subject kind."""
ORDER_KINDS: Final = frozenset({"order", "balance"})
"""Kinds that are never lost: they wait in the journal's outbox until the broker has them."""

_DIGEST_BYTES: Final = 12
_LOCAL_ORDER_FIELDS: Final = ("order_id", "latency_ms")
"""Fields of an order that one Genesis process makes up (not the exchange): left out of its id."""


def kind_of(event: object) -> str | None:
    """The subject kind of ``event`` (``trade``, ``order`` …), ``None`` if the bridge skips it."""
    return KINDS.get(type(event))


def subject_for(event: object) -> str:
    """``genesis.<kind>.<SYMBOL>`` for ``event``.

    Raises:
        ValueError: the bridge does not carry this event type.
    """
    kind = kind_of(event)
    if kind is None:
        raise ValueError(f"the bridge does not carry {type(event).__name__}")
    token = ACCOUNT_SUBJECT_TOKEN if kind == "balance" else getattr(event, "symbol", "")
    return f"{SUBJECT_PREFIX}.{kind}.{token}"


def _digest(record: dict[str, object]) -> str:
    data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).hexdigest()


def message_id(event: object, record: dict[str, object] | None = None) -> str:
    """The ``Nats-Msg-Id`` of ``event``: equal for the same exchange event, distinct otherwise.

    ``record`` is ``event_to_record(event)`` when the caller has it already (it is not changed).

    Raises:
        ValueError: the bridge does not carry this event type.
    """
    if isinstance(event, Trade):
        return f"trade:{event.symbol}:{event.trade_id:d}"
    if isinstance(event, Depth):
        return f"depth:{event.symbol}:{event.last_update_id:d}:{len(event.bids)}x{len(event.asks)}"
    if isinstance(event, OrderBook):
        return f"book:{event.symbol}:{event.last_update_id:d}"
    if isinstance(event, Kline):
        closed = "c" if event.closed else "o"
        return (
            f"kline:{event.symbol}:{event.interval}:{event.open_time_ms:d}"
            f":{event.event_time_ms:d}:{closed}"
        )
    if isinstance(event, Ticker):
        return f"ticker:{event.symbol}:{event.event_time_ms:d}:{event.last_trade_id:d}"
    if isinstance(event, OrderUpdate):
        record = event_to_record(event) if record is None else record
        order = dict(record["order"])  # type: ignore[call-overload]  # an attrs object's record
        for name in _LOCAL_ORDER_FIELDS:
            order.pop(name, None)
        stripped = {**record, "order": order}
        return f"order:{event.order.symbol}:{event.order.client_order_id}:{_digest(stripped)}"
    if isinstance(event, AccountBalances):
        record = event_to_record(event) if record is None else record
        return f"balance:{event.event_time_ms:d}:{event.update_time_ms:d}:{_digest(record)}"
    raise ValueError(f"the bridge does not carry {type(event).__name__}")
