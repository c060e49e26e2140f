"""The simulator's ledger: accounts, balances, locks, commissions, and the orders they own.

Typed values only (Decimal amounts, :class:`OrderState` records); the matching engine
(:mod:`genesis.sim.engine`) is the one writer, through :meth:`Ledger.move`,
:meth:`Ledger.register`, :meth:`Ledger.close` and :meth:`Ledger.settle`. The order queries
(``GET order``, ``openOrders``, ``allOrders``, ``myTrades``) read here.

Memory is bounded: closed orders and own trades per account
(:data:`~genesis.sim.model.MAX_CLOSED_ORDERS_PER_ACCOUNT`,
:data:`~genesis.sim.model.MAX_TRADES_PER_ACCOUNT`); a forgotten order answers -2013.
"""

from __future__ import annotations

from collections import deque
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import attrs

from genesis.sim.errors import (
    CANCEL_REJECTED,
    CLIENT_ORDER_ID_INVALID,
    MSG_UNKNOWN_ORDER,
    NO_SUCH_ORDER,
    OPTIONAL_PARAMS_BAD_COMBO,
    REJECTED_MBX_KEY,
    SimReject,
)
from genesis.sim.model import (
    DEFAULT_COMMISSION_RATE,
    MAX_CLOSED_ORDERS_PER_ACCOUNT,
    MAX_TRADES_PER_ACCOUNT,
    AccountTrade,
    Balance,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from genesis.sim.request import STOP_TYPES, both_empty, check_range

if TYPE_CHECKING:
    from collections.abc import Container

__all__ = ["Account", "Ledger", "OrderState"]

_ZERO: Final = Decimal(0)
_Q8: Final = Decimal("0.00000001")


def _q8_down(value: Decimal) -> Decimal:
    return value.quantize(_Q8, rounding=ROUND_DOWN)


@attrs.define(eq=False, kw_only=True)
class OrderState:
    """The engine's mutable record of one order (:meth:`snapshot` is the public view)."""

    api_key: str
    symbol: str
    order_id: int
    client_order_id: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: Decimal
    stop_price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    update_time_ms: int
    working_time_ms: int
    executed_qty: Decimal = _ZERO
    cum_quote: Decimal = _ZERO
    status: OrderStatus = OrderStatus.NEW
    is_working: bool = False
    locked: Decimal = _ZERO
    lock_asset: str = ""
    lock_price: Decimal = _ZERO
    cancel_client_order_id: str | None = None
    expiry_reason: str | None = None
    has_fill: bool = False
    on_book: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def quote_mode(self) -> bool:
        return self.orig_quote_qty > 0

    def snapshot(self) -> Order:
        return Order(
            symbol=self.symbol,
            order_id=self.order_id,
            client_order_id=self.client_order_id,
            side=self.side,
            type=self.type,
            time_in_force=self.tif,
            price=self.price,
            stop_price=self.stop_price,
            orig_qty=self.orig_qty,
            orig_quote_order_qty=self.orig_quote_qty,
            executed_qty=self.executed_qty,
            cummulative_quote_qty=self.cum_quote,
            status=self.status,
            time_ms=self.time_ms,
            update_time_ms=self.update_time_ms,
            working_time_ms=self.working_time_ms,
            is_working=self.is_working,
            cancel_client_order_id=self.cancel_client_order_id,
            expiry_reason=self.expiry_reason,
        )


def _trades_deque() -> deque[AccountTrade]:
    return deque(maxlen=MAX_TRADES_PER_ACCOUNT)


@attrs.define(eq=False)
class Account:
    """An account: balances, commission rates, its orders and its own trades.

    Read it through :meth:`genesis.sim.exchange.Exchange.balances` /
    :meth:`~genesis.sim.exchange.Exchange.account`; only the ledger mutates it. ``free``/
    ``locked`` hold exact Decimals per asset.
    """

    api_key: str
    free: dict[str, Decimal]
    locked: dict[str, Decimal] = attrs.field(factory=dict)
    maker_rate: Decimal = DEFAULT_COMMISSION_RATE
    taker_rate: Decimal = DEFAULT_COMMISSION_RATE
    can_trade: bool = True
    uid: int = 0
    update_time_ms: int = 0
    orders: dict[tuple[str, int], OrderState] = attrs.field(factory=dict, repr=False)
    open_orders: dict[tuple[str, int], OrderState] = attrs.field(factory=dict, repr=False)
    open_count: dict[str, int] = attrs.field(factory=dict, repr=False)
    algo_count: dict[str, int] = attrs.field(factory=dict, repr=False)
    closed: deque[tuple[str, int]] = attrs.field(factory=deque, repr=False)
    client_open: dict[tuple[str, str], int] = attrs.field(factory=dict, repr=False)
    client_latest: dict[tuple[str, str], int] = attrs.field(factory=dict, repr=False)
    trades: deque[AccountTrade] = attrs.field(factory=_trades_deque, repr=False)


class _Timed(Protocol):
    @property
    def time_ms(self) -> int: ...


_TimedT = TypeVar("_TimedT", bound=_Timed)


def _time_window(
    rows: list[_TimedT], start_time: int | None, end_time: int | None, limit: int
) -> list[_TimedT]:
    """Rows (oldest first) within the optional time range: the first ``limit`` from
    ``start_time`` when it is given, else the most recent ``limit``."""
    if start_time is not None:
        rows = [r for r in rows if r.time_ms >= start_time]
    if end_time is not None:
        rows = [r for r in rows if r.time_ms <= end_time]
    return rows[:limit] if start_time is not None else rows[-limit:]


class Ledger:
    """All accounts, and the fees charged.

    Args:
        watched: API keys whose balance changes are collected in :attr:`changed` (the keys with
            user-data listeners); membership is checked on every change.
    """

    def __init__(self, watched: Container[str]) -> None:
        self.accounts: dict[str, Account] = {}
        self.fees: dict[str, Decimal] = {}
        self.changed: dict[str, set[str]] = {}
        """Assets whose balances changed per watched account, since the engine last took it."""
        self._watched = watched
        self._next_uid = 1_000_001

    # --- accounts --------------------------------------------------------------------------

    def add_account(
        self,
        api_key: str,
        balances: dict[str, Decimal],
        *,
        maker_rate: Decimal,
        taker_rate: Decimal,
    ) -> Account:
        acct = Account(
            api_key=api_key,
            free={a: Decimal(v) for a, v in balances.items()},
            maker_rate=maker_rate,
            taker_rate=taker_rate,
            uid=self._next_uid,
        )
        self._next_uid += 1
        self.accounts[api_key] = acct
        return acct

    def account(self, api_key: str) -> Account:
        """The account of ``api_key``; -2015 for an unknown key."""
        acct = self.accounts.get(api_key)
        if acct is None:
            raise SimReject(REJECTED_MBX_KEY)
        return acct

    def balances(self, api_key: str) -> dict[str, Balance]:
        acct = self.account(api_key)
        assets = sorted(set(acct.free) | set(acct.locked))
        return {a: Balance(acct.free.get(a, _ZERO), acct.locked.get(a, _ZERO)) for a in assets}

    # --- balance changes -------------------------------------------------------------------

    def move(
        self,
        acct: Account,
        asset: str,
        now_ms: int,
        *,
        free: Decimal = _ZERO,
        locked: Decimal = _ZERO,
    ) -> None:
        if free:
            acct.free[asset] = acct.free.get(asset, _ZERO) + free
        if locked:
            acct.locked[asset] = acct.locked.get(asset, _ZERO) + locked
        acct.update_time_ms = now_ms
        if acct.api_key in self._watched:
            self.changed.setdefault(acct.api_key, set()).add(asset)

    def lock(self, order: OrderState, asset: str, amount: Decimal, now_ms: int) -> None:
        self.move(self.accounts[order.api_key], asset, now_ms, free=-amount, locked=amount)
        order.locked = amount
        order.lock_asset = asset

    def unlock_all(self, order: OrderState, now_ms: int) -> None:
        if order.locked:
            amount = order.locked
            order.locked = _ZERO
            acct = self.accounts[order.api_key]
            self.move(acct, order.lock_asset, now_ms, free=amount, locked=-amount)

    # --- order lifecycle -------------------------------------------------------------------

    def register(self, order: OrderState) -> None:
        acct = self.accounts[order.api_key]
        key = (order.symbol, order.order_id)
        acct.orders[key] = order
        acct.open_orders[key] = order
        acct.open_count[order.symbol] = acct.open_count.get(order.symbol, 0) + 1
        if order.type in STOP_TYPES:
            acct.algo_count[order.symbol] = acct.algo_count.get(order.symbol, 0) + 1
        acct.client_open[(order.symbol, order.client_order_id)] = order.order_id
        acct.client_latest[(order.symbol, order.client_order_id)] = order.order_id

    def close(
        self, order: OrderState, status: OrderStatus, now_ms: int, reason: str | None = None
    ) -> None:
        """Move an order to a final status, release what it still locks, and forget the
        oldest closed orders beyond the cap."""
        order.status = status
        order.update_time_ms = now_ms
        if reason is not None:
            order.expiry_reason = reason
        self.unlock_all(order, now_ms)
        acct = self.accounts[order.api_key]
        key = (order.symbol, order.order_id)
        if acct.open_orders.pop(key, None) is not None:
            acct.open_count[order.symbol] -= 1
            if order.type in STOP_TYPES:
                acct.algo_count[order.symbol] -= 1
        ckey = (order.symbol, order.client_order_id)
        if acct.client_open.get(ckey) == order.order_id:
            del acct.client_open[ckey]
        acct.closed.append(key)
        while len(acct.closed) > MAX_CLOSED_ORDERS_PER_ACCOUNT:
            old_key = acct.closed.popleft()
            old = acct.orders.pop(old_key, None)
            if old is not None:
                okey = (old.symbol, old.client_order_id)
                if acct.client_latest.get(okey) == old.order_id:
                    del acct.client_latest[okey]

    def settle(
        self,
        *,
        buyer: OrderState,
        seller: OrderState,
        maker: OrderState,
        base: str,
        quote_asset: str,
        qty: Decimal,
        price: Decimal,
        trade_id: int,
        now_ms: int,
    ) -> tuple[AccountTrade, AccountTrade]:
        """Settle one fill: release locks at each order's lock price, move the assets, charge
        commissions in the received asset, and record both sides' trades and fills.

        Returns:
            The buyer's and the seller's :class:`AccountTrade`.
        """
        quote = qty * price
        bacct = self.accounts[buyer.api_key]
        sacct = self.accounts[seller.api_key]
        if buyer.locked:
            release = min(buyer.locked, qty * buyer.lock_price)
            buyer.locked -= release
            self.move(bacct, quote_asset, now_ms, free=release, locked=-release)
        self.move(bacct, quote_asset, now_ms, free=-quote)
        brate = bacct.maker_rate if buyer is maker else bacct.taker_rate
        bcomm = _q8_down(qty * brate)
        self.move(bacct, base, now_ms, free=qty - bcomm)
        if seller.locked:
            release = min(seller.locked, qty)
            seller.locked -= release
            self.move(sacct, base, now_ms, free=release, locked=-release)
        self.move(sacct, base, now_ms, free=-qty)
        srate = sacct.maker_rate if seller is maker else sacct.taker_rate
        scomm = _q8_down(quote * srate)
        self.move(sacct, quote_asset, now_ms, free=quote - scomm)
        if bcomm:
            self.fees[base] = self.fees.get(base, _ZERO) + bcomm
        if scomm:
            self.fees[quote_asset] = self.fees.get(quote_asset, _ZERO) + scomm

        rows: list[AccountTrade] = []
        for order, acct, comm, comm_asset in (
            (buyer, bacct, bcomm, base),
            (seller, sacct, scomm, quote_asset),
        ):
            row = AccountTrade(
                symbol=order.symbol,
                trade_id=trade_id,
                order_id=order.order_id,
                price=price,
                qty=qty,
                commission=comm,
                commission_asset=comm_asset,
                time_ms=now_ms,
                is_buyer=order is buyer,
                is_maker=order is maker,
            )
            acct.trades.append(row)
            rows.append(row)
            order.executed_qty += qty
            order.cum_quote += quote
            order.update_time_ms = now_ms
            order.status = OrderStatus.PARTIALLY_FILLED
        return rows[0], rows[1]

    # --- queries ---------------------------------------------------------------------------

    def find_open(
        self, api_key: str, symbol: str, order_id: int | None, orig_cid: str | None
    ) -> OrderState:
        """The open order to cancel; -2011 "Unknown order sent." when there is none."""
        acct = self.account(api_key)
        sym = symbol
        order: OrderState | None
        if order_id is not None:
            order = acct.open_orders.get((sym, order_id))
            if order is not None and orig_cid is not None and order.client_order_id != orig_cid:
                order = None
        else:
            oid = acct.client_open.get((sym, orig_cid or ""))
            order = acct.open_orders.get((sym, oid)) if oid is not None else None
        if order is None:
            raise SimReject(CANCEL_REJECTED, MSG_UNKNOWN_ORDER)
        return order

    def query_order(
        self, api_key: str, symbol: str, order_id: int | None, orig_client_order_id: str | None
    ) -> Order:
        acct = self.account(api_key)
        orig_cid = orig_client_order_id or None
        if order_id is None and orig_cid is None:
            raise both_empty("origClientOrderId", "orderId")
        if order_id is None:
            key = (symbol, orig_cid or "")
            found = acct.client_open.get(key, acct.client_latest.get(key))
            order = acct.orders.get((symbol, found)) if found is not None else None
        else:
            order = acct.orders.get((symbol, order_id))
            if order is not None and orig_cid is not None and order.client_order_id != orig_cid:
                raise SimReject(CLIENT_ORDER_ID_INVALID)
        if order is None:
            raise SimReject(NO_SUCH_ORDER)
        return order.snapshot()

    def open_orders(self, api_key: str, symbol: str | None) -> list[Order]:
        acct = self.account(api_key)
        return [
            o.snapshot() for (s, _), o in acct.open_orders.items() if symbol is None or s == symbol
        ]

    def open_order_ids(self, api_key: str, symbol: str) -> set[int]:
        acct = self.account(api_key)
        return {oid for (s, oid) in acct.open_orders if s == symbol}

    def all_orders(
        self,
        api_key: str,
        symbol: str,
        *,
        order_id: int | None,
        start_time: int | None,
        end_time: int | None,
        limit: int,
    ) -> list[Order]:
        acct = self.account(api_key)
        limit = max(1, min(limit, 1000))
        check_range(start_time, end_time, 24)
        orders = sorted(
            (o for (s, _), o in acct.orders.items() if s == symbol), key=lambda o: o.order_id
        )
        if order_id is not None:
            return [o.snapshot() for o in orders if o.order_id >= order_id][:limit]
        return [o.snapshot() for o in _time_window(orders, start_time, end_time, limit)]

    def my_trades(
        self,
        api_key: str,
        symbol: str,
        *,
        order_id: int | None,
        from_id: int | None,
        start_time: int | None,
        end_time: int | None,
        limit: int,
    ) -> list[AccountTrade]:
        acct = self.account(api_key)
        timed = start_time is not None or end_time is not None
        if timed and (from_id is not None or order_id is not None):
            raise SimReject(OPTIONAL_PARAMS_BAD_COMBO)
        check_range(start_time, end_time, 24)
        limit = max(1, min(limit, 1000))
        rows = [t for t in acct.trades if t.symbol == symbol]
        if order_id is not None:
            rows = [t for t in rows if t.order_id == order_id]
        if from_id is not None:
            return [t for t in rows if t.trade_id >= from_id][:limit]
        return _time_window(rows, start_time, end_time, limit)
