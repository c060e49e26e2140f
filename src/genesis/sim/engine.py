"""The matching engine: order books, price-time matching, stop triggers and event fan-out.

It works on typed values only: a :class:`~genesis.sim.request.NewOrder` that has passed the
syntax checks and the filters, an :class:`~genesis.sim.ledger.OrderState` to cancel. It owns
the -2010 engine rejections ("Market is closed.", "Duplicate order sent.", insufficient
balance, LIMIT_MAKER would take, a stop that would trigger immediately, no liquidity for a
``quoteOrderQty``) with the texts of :mod:`genesis.sim.errors`.

Every mutation happens inside one *operation* (a placement with its whole match and the stops
it triggers, a cancel, a cancel-all). When the operation completes, its effects go to the
listeners in this order: public trades, the book diff (one update id per operation), user
events, first fills. Listeners are plain sync callables; they must not block and may call back
into the engine.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import random
import string
from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Final, TypeVar

import attrs

from genesis.sim.errors import (
    BAD_SYMBOL,
    CANCEL_REJECTED,
    MSG_CANCEL_RESTRICTIONS,
    MSG_DUPLICATE_ORDER,
    MSG_INSUFFICIENT_BALANCE,
    MSG_LIQUIDITY_BELOW_MIN,
    MSG_MARKET_CLOSED,
    MSG_UNKNOWN_ORDER,
    MSG_WOULD_MATCH,
    MSG_WOULD_TRIGGER,
    NEW_ORDER_REJECTED,
    SimReject,
)
from genesis.sim.history import SymbolHistory
from genesis.sim.ledger import Ledger, OrderState
from genesis.sim.model import (
    AccountTrade,
    BookDiff,
    BookListener,
    ExecutionType,
    Fill,
    FirstFillListener,
    JsonObject,
    Order,
    OrderStatus,
    OrderType,
    PublicTrade,
    Side,
    TimeInForce,
    TradeListener,
    UserListener,
)
from genesis.sim.payloads import account_position_event, execution_report
from genesis.sim.request import mandatory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from genesis.sim.request import NewOrder
    from genesis.sim.symbols import SymbolSpec

__all__ = ["BookSide", "Engine", "Listeners", "SymbolState"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_ZERO: Final = Decimal(0)
_CLIENT_ID_ALPHABET: Final = string.ascii_letters + string.digits
_STOP_CASCADE_LIMIT: Final = 10_000


def _floor_step(value: Decimal, step: Decimal) -> Decimal:
    if step == 0:
        return value
    return (value // step) * step


def _engine_reject(msg: str) -> SimReject:
    return SimReject(NEW_ORDER_REJECTED, msg)


@attrs.define(eq=False)
class BookSide:
    """One side of a book: price levels (ascending list + FIFO queues) and level totals."""

    is_bid: bool
    prices: list[Decimal] = attrs.field(factory=list)
    orders: dict[Decimal, deque[OrderState]] = attrs.field(factory=dict)
    qty: dict[Decimal, Decimal] = attrs.field(factory=dict)

    def best(self) -> Decimal | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def best_level(self) -> tuple[Decimal, Decimal] | None:
        best = self.best()
        return (best, self.qty[best]) if best is not None else None

    def prices_best_first(self) -> list[Decimal]:
        return self.prices[::-1] if self.is_bid else list(self.prices)

    def top(self, n: int) -> list[tuple[Decimal, Decimal]]:
        ps = self.prices[: -n - 1 : -1] if self.is_bid else self.prices[:n]
        return [(p, self.qty[p]) for p in ps]

    def add(self, order: OrderState) -> None:
        p = order.price
        queue = self.orders.get(p)
        if queue is None:
            bisect.insort(self.prices, p)
            queue = self.orders[p] = deque()
            self.qty[p] = _ZERO
        queue.append(order)
        self.qty[p] += order.remaining

    def reduce(self, price: Decimal, qty: Decimal) -> None:
        self.qty[price] -= qty

    def remove(self, order: OrderState) -> None:
        p = order.price
        queue = self.orders[p]
        queue.remove(order)
        self.qty[p] -= order.remaining
        if not queue:
            del self.orders[p]
            del self.qty[p]
            del self.prices[bisect.bisect_left(self.prices, p)]


@attrs.define(eq=False)
class SymbolState:
    """One symbol: its spec, book, id counters, waiting stops and history."""

    spec: SymbolSpec
    bids: BookSide = attrs.field(factory=lambda: BookSide(is_bid=True))
    asks: BookSide = attrs.field(factory=lambda: BookSide(is_bid=False))
    update_id: int = 1
    next_order_id: int = 1
    next_trade_id: int = 1
    next_agg_id: int = 1
    stops: dict[int, OrderState] = attrs.field(factory=dict)
    history: SymbolHistory = attrs.field(factory=SymbolHistory)

    def opposite(self, side: Side) -> BookSide:
        return self.asks if side is Side.BUY else self.bids

    def own(self, side: Side) -> BookSide:
        return self.bids if side is Side.BUY else self.asks


@attrs.define(eq=False)
class _Op:
    """What one engine operation did; dispatched to listeners when it completes."""

    now_ms: int
    trades: dict[str, list[PublicTrade]] = attrs.field(factory=dict)
    touched: dict[str, tuple[set[Decimal], set[Decimal]]] = attrs.field(factory=dict)
    user_events: list[tuple[str, JsonObject]] = attrs.field(factory=list)
    first_fills: list[OrderState] = attrs.field(factory=list)
    placing: OrderState | None = None
    placing_first_fill: bool = False
    placing_fills: list[Fill] = attrs.field(factory=list)
    agg_key: tuple[str, int, Decimal] | None = None

    def touch(self, symbol: str, is_bid: bool, price: Decimal) -> None:
        sides = self.touched.get(symbol)
        if sides is None:
            sides = self.touched[symbol] = (set(), set())
        sides[0 if is_bid else 1].add(price)


def _discard(items: list[_T], item: _T) -> None:
    if item in items:
        items.remove(item)


class Listeners:
    """The four listener lists and the fan-out of one completed operation."""

    def __init__(self) -> None:
        self.trade: list[TradeListener] = []
        self.book: list[BookListener] = []
        self.user: dict[str, list[UserListener]] = {}
        self.first_fill: list[FirstFillListener] = []

    def add_trade(self, cb: TradeListener) -> Callable[[], None]:
        self.trade.append(cb)
        return lambda: _discard(self.trade, cb)

    def add_book(self, cb: BookListener) -> Callable[[], None]:
        self.book.append(cb)
        return lambda: _discard(self.book, cb)

    def add_first_fill(self, cb: FirstFillListener) -> Callable[[], None]:
        self.first_fill.append(cb)
        return lambda: _discard(self.first_fill, cb)

    def add_user(self, api_key: str, cb: UserListener) -> Callable[[], None]:
        self.user.setdefault(api_key, []).append(cb)

        def remove() -> None:
            cbs = self.user.get(api_key)
            if cbs is not None:
                _discard(cbs, cb)
                if not cbs:
                    del self.user[api_key]

        return remove

    def dispatch(self, op: _Op, symbols: dict[str, SymbolState], ledger: Ledger) -> None:
        """Bump the update id of every book ``op`` touched and tell the listeners what it did:
        public trades, book diffs, user events (executionReports, then one
        ``outboundAccountPosition`` per account whose balances changed), first fills."""
        diffs: list[BookDiff] = []
        for sym, (bid_prices, ask_prices) in op.touched.items():
            st = symbols[sym]
            st.update_id += 1
            diffs.append(
                BookDiff(
                    symbol=sym,
                    first_update_id=st.update_id,
                    last_update_id=st.update_id,
                    bids=tuple(
                        (p, st.bids.qty.get(p, _ZERO)) for p in sorted(bid_prices, reverse=True)
                    ),
                    asks=tuple((p, st.asks.qty.get(p, _ZERO)) for p in sorted(ask_prices)),
                    time_ms=op.now_ms,
                )
            )
        user_events = list(op.user_events)
        changed, ledger.changed = ledger.changed, {}
        for api_key, assets in changed.items():
            acct = ledger.accounts[api_key]
            rows = [(a, acct.free.get(a, _ZERO), acct.locked.get(a, _ZERO)) for a in sorted(assets)]
            user_events.append(
                (api_key, account_position_event(op.now_ms, acct.update_time_ms, rows))
            )
        first_fills = [(o.api_key, o.snapshot()) for o in op.first_fills]
        for sym, trades in op.trades.items():
            batch = tuple(trades)
            for trade_cb in list(self.trade):
                trade_cb(sym, batch)
        for diff in diffs:
            for book_cb in list(self.book):
                book_cb(diff)
        for api_key, event in user_events:
            for user_cb in list(self.user.get(api_key, ())):
                user_cb(event)
        for api_key, snap in first_fills:
            for fill_cb in list(self.first_fill):
                fill_cb(api_key, snap)


def _crosses(st: SymbolState, side: Side, price: Decimal) -> bool:
    best = st.opposite(side).best()
    if best is None:
        return False
    return best <= price if side is Side.BUY else best >= price


def _stop_triggered(order_type: OrderType, side: Side, stop: Decimal, last: Decimal) -> bool:
    """Whether the last trade price has reached a stop order's trigger (FACTS.md §3).

    STOP_LOSS BUY and TAKE_PROFIT SELL sit above the market (trigger when last >= stop);
    STOP_LOSS SELL and TAKE_PROFIT BUY sit below it (trigger when last <= stop).
    """
    is_stop_loss = order_type in (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT)
    above = is_stop_loss == (side is Side.BUY)
    return last >= stop if above else last <= stop


def _simulate(
    st: SymbolState,
    side: Side,
    *,
    limit: Decimal | None = None,
    qty: Decimal | None = None,
    quote: Decimal | None = None,
) -> tuple[Decimal, Decimal]:
    """Dry-run a taker against the book: (base filled, quote amount). No mutation."""
    book = st.opposite(side)
    step = st.spec.lot_size.step_size
    filled = _ZERO
    cost = _ZERO
    for p in book.prices_best_first():
        if limit is not None and (p > limit if side is Side.BUY else p < limit):
            break
        level = book.qty[p]
        if quote is not None:
            take = min(level, _floor_step((quote - cost) / p, step))
        else:
            assert qty is not None
            take = min(level, qty - filled)
        if take <= 0:
            break
        filled += take
        cost += take * p
        if take < level:
            break
    return filled, cost


def _required_funds(st: SymbolState, req: NewOrder) -> tuple[str, Decimal]:
    """The asset and amount an order needs free (MARKET: what it would spend now)."""
    spec = st.spec
    side = req.side
    # quoteOrderQty (MARKET only) is sized against the opposite side: it must have a level.
    if req.quote_order_qty is not None and st.opposite(side).best() is None:
        raise _engine_reject(MSG_LIQUIDITY_BELOW_MIN)
    if side is Side.SELL:
        if req.quote_order_qty is not None:
            return spec.base_asset, _simulate(st, side, quote=req.quote_order_qty)[0]
        assert req.quantity is not None
        return spec.base_asset, req.quantity
    if req.type is OrderType.MARKET:
        if req.quote_order_qty is not None:
            return spec.quote_asset, req.quote_order_qty
        return spec.quote_asset, _simulate(st, side, qty=req.quantity)[1]
    assert req.quantity is not None
    unit = req.stop_price if req.price is None or req.market_exec else req.price
    assert unit is not None
    return spec.quote_asset, req.quantity * unit


class Engine:
    """Books and matching for every symbol, over one :class:`~genesis.sim.ledger.Ledger`.

    Args:
        symbols: the tradable symbols.
        seed: seeds generated client order ids.
    """

    def __init__(self, symbols: dict[str, SymbolSpec], *, seed: int = 0) -> None:
        self.symbols: dict[str, SymbolState] = {
            name: SymbolState(spec=spec) for name, spec in symbols.items()
        }
        self.listeners = Listeners()
        self.ledger = Ledger(watched=self.listeners.user)
        self._rng = random.Random(seed)
        self._op: _Op | None = None
        self._execution_id = 0
        self.orders_placed = 0
        self.trade_count = 0

    def symbol(self, symbol: str | None) -> SymbolState:
        """The state of ``symbol``: -1102 when not sent, -1121 when unknown."""
        if not symbol:
            raise mandatory("symbol")
        st = self.symbols.get(symbol)
        if st is None:
            raise SimReject(BAD_SYMBOL)
        return st

    def new_client_id(self) -> str:
        return "".join(self._rng.choices(_CLIENT_ID_ALPHABET, k=22))

    # --- operations ------------------------------------------------------------------------

    def place(
        self, api_key: str, req: NewOrder, now_ms: int
    ) -> tuple[Order, tuple[Fill, ...], bool]:
        """Run the engine checks (-2010), then execute ``req``.

        Returns:
            The order right after its own matching (before the stops its trades trigger), its
            fills during placement, and whether it got its first fill then.
        """
        acct = self.ledger.account(api_key)
        st = self.symbols[req.symbol]
        if st.spec.status != "TRADING":
            raise _engine_reject(MSG_MARKET_CLOSED)
        if (
            req.client_order_id is not None
            and (req.symbol, req.client_order_id) in acct.client_open
        ):
            raise _engine_reject(MSG_DUPLICATE_ORDER)
        if (
            req.type is OrderType.LIMIT_MAKER
            and req.price is not None
            and _crosses(st, req.side, req.price)
        ):
            raise _engine_reject(MSG_WOULD_MATCH)
        last = st.history.last_price
        if (
            req.stop_price is not None
            and last is not None
            and _stop_triggered(req.type, req.side, req.stop_price, last)
        ):
            raise _engine_reject(MSG_WOULD_TRIGGER)
        lock_asset, need = _required_funds(st, req)
        if acct.free.get(lock_asset, _ZERO) < need:
            raise _engine_reject(MSG_INSUFFICIENT_BALANCE)

        order = OrderState(
            api_key=api_key,
            symbol=req.symbol,
            order_id=st.next_order_id,
            client_order_id=req.client_order_id or self.new_client_id(),
            side=req.side,
            type=req.type,
            tif=req.time_in_force,
            price=req.price if req.price is not None else _ZERO,
            stop_price=req.stop_price if req.stop_price is not None else _ZERO,
            orig_qty=req.quantity if req.quantity is not None else _ZERO,
            orig_quote_qty=req.quote_order_qty if req.quote_order_qty is not None else _ZERO,
            time_ms=now_ms,
            update_time_ms=now_ms,
            working_time_ms=-1 if req.is_stop else now_ms,
            is_working=not req.is_stop,
        )
        st.next_order_id += 1
        self.orders_placed += 1
        with self._operation(now_ms) as op:
            op.placing = order
            self.ledger.register(order)
            if req.type is not OrderType.MARKET:
                self.ledger.lock(order, lock_asset, need, now_ms)
                if req.side is Side.BUY:
                    order.lock_price = (
                        req.price
                        if req.price is not None and not req.market_exec
                        else order.stop_price
                    )
            self._report(order, ExecutionType.NEW)
            if req.is_stop:
                st.stops[order.order_id] = order
            elif req.type is OrderType.MARKET:
                self._execute_market(st, order, quote_target=req.quote_order_qty)
            else:
                self._execute_limit(st, order)
            snapshot = order.snapshot()
            fills = tuple(op.placing_fills)
            first_fill = op.placing_first_fill
            op.placing = None
            self._run_stops(st)
        logger.debug(
            "sim.order.placed symbol=%s id=%d type=%s status=%s",
            req.symbol,
            order.order_id,
            req.type.value,
            snapshot.status.value,
        )
        return snapshot, fills, first_fill

    def cancel(
        self,
        st: SymbolState,
        order: OrderState,
        cancel_cid: str,
        restriction: str | None,
        now_ms: int,
    ) -> None:
        """Cancel one open order (``restriction``: ``ONLY_NEW``/``ONLY_PARTIALLY_FILLED``)."""
        if (restriction == "ONLY_NEW" and order.status is not OrderStatus.NEW) or (
            restriction == "ONLY_PARTIALLY_FILLED"
            and order.status is not OrderStatus.PARTIALLY_FILLED
        ):
            raise SimReject(CANCEL_REJECTED, MSG_CANCEL_RESTRICTIONS)
        with self._operation(now_ms):
            self._cancel(st, order, cancel_cid)

    def cancel_all(self, api_key: str, st: SymbolState, now_ms: int) -> list[OrderState]:
        acct = self.ledger.account(api_key)
        orders = [o for (s, _), o in acct.open_orders.items() if s == st.spec.symbol]
        if not orders:
            raise SimReject(CANCEL_REJECTED, MSG_UNKNOWN_ORDER)
        cancel_cid = self.new_client_id()
        with self._operation(now_ms):
            for order in orders:
                self._cancel(st, order, cancel_cid)
        return orders

    # --- internals: operations and reports -------------------------------------------------

    @contextlib.contextmanager
    def _operation(self, now_ms: int) -> Iterator[_Op]:
        if self._op is not None:
            raise RuntimeError("re-entrant exchange operation")
        op = _Op(now_ms=now_ms)
        self._op = op
        try:
            yield op
        finally:
            self._op = None
        self._finish(op)

    def _cur(self) -> _Op:
        op = self._op
        assert op is not None, "engine mutation outside an operation"
        return op

    def _close(self, order: OrderState, status: OrderStatus, reason: str | None = None) -> None:
        self.ledger.close(order, status, self._cur().now_ms, reason)

    def _cancel(self, st: SymbolState, order: OrderState, cancel_cid: str) -> None:
        op = self._cur()
        if order.on_book:
            book = st.own(order.side)
            book.remove(order)
            order.on_book = False
            op.touch(st.spec.symbol, book.is_bid, order.price)
        st.stops.pop(order.order_id, None)
        order.cancel_client_order_id = cancel_cid
        self._close(order, OrderStatus.CANCELED)
        self._report(order, ExecutionType.CANCELED)

    def _report(
        self, order: OrderState, xtype: ExecutionType, fill: AccountTrade | None = None
    ) -> None:
        self._execution_id += 1
        if order.api_key not in self.listeners.user:
            return
        op = self._cur()
        event = execution_report(
            order.snapshot(),
            execution_type=xtype,
            event_time_ms=op.now_ms,
            execution_id=self._execution_id,
            fill=fill,
            on_book=order.on_book or (order.is_working and order.status.is_open),
        )
        op.user_events.append((order.api_key, event))

    def _expire(self, order: OrderState, reason: str) -> None:
        """Close ``order`` as EXPIRED (``reason`` is its ``expiryReason``) and report it."""
        self._close(order, OrderStatus.EXPIRED, reason)
        self._report(order, ExecutionType.EXPIRED)

    # --- internals: matching ---------------------------------------------------------------

    def _execute_limit(self, st: SymbolState, order: OrderState) -> None:
        if order.tif is TimeInForce.FOK:
            filled, _ = _simulate(st, order.side, limit=order.price, qty=order.remaining)
            if filled < order.remaining:
                self._expire(order, "UNFILLED_FOK_ORDER_EXPIRED")
                return
        self._match(st, order, limit=order.price)
        if not order.status.is_open:
            return
        if order.tif is TimeInForce.GTC:
            book = st.own(order.side)
            book.add(order)
            order.on_book = True
            self._cur().touch(st.spec.symbol, book.is_bid, order.price)
        else:
            self._expire(order, "UNFILLED_IOC_QUANTITY_EXPIRED")

    def _execute_market(
        self,
        st: SymbolState,
        order: OrderState,
        *,
        quote_target: Decimal | None = None,
        budget: Decimal | None = None,
    ) -> None:
        self._match(st, order, limit=None, quote_target=quote_target, budget=budget)
        if order.quote_mode:
            order.orig_qty = order.executed_qty
        if order.status.is_open:
            self._expire(order, "INSUFFICIENT_LIQUIDITY")

    def _match(
        self,
        st: SymbolState,
        taker: OrderState,
        *,
        limit: Decimal | None,
        quote_target: Decimal | None = None,
        budget: Decimal | None = None,
    ) -> None:
        """Cross ``taker`` with the opposite side in price-time priority.

        Qty mode fills up to ``taker.remaining``; quote mode (``quote_target``) spends or
        receives up to that much quote asset in whole steps; ``budget`` caps a buyer's spend.
        Sets the taker FILLED when done; leaves it open otherwise.
        """
        book = st.opposite(taker.side)
        step = st.spec.lot_size.step_size
        is_buy = taker.side is Side.BUY
        while True:
            p = book.best()
            if p is None or (limit is not None and (p > limit if is_buy else p < limit)):
                return
            maker = book.orders[p][0]
            if quote_target is not None:
                qty = _floor_step((quote_target - taker.cum_quote) / p, step)
            else:
                qty = taker.remaining
            if budget is not None:
                qty = min(qty, _floor_step((budget - taker.cum_quote) / p, step))
            qty = min(qty, maker.remaining)
            if qty <= 0:
                return
            fill = self._trade(st, taker, maker, qty, p)
            if quote_target is not None:
                nxt = book.best()
                left = quote_target - taker.cum_quote
                done = left <= 0 or (nxt is not None and _floor_step(left / nxt, step) <= 0)
            else:
                done = taker.remaining <= 0
            if done:
                self._close(taker, OrderStatus.FILLED)
            self._report(taker, ExecutionType.TRADE, fill)
            if done:
                return

    def _trade(
        self, st: SymbolState, taker: OrderState, maker: OrderState, qty: Decimal, price: Decimal
    ) -> AccountTrade:
        """Execute one fill between ``taker`` and the first ``maker`` of its level: settle it
        in the ledger, record the public trade, and finish the maker. Returns the taker's side
        of the trade; the caller finishes the taker."""
        op = self._cur()
        spec = st.spec
        buyer, seller = (taker, maker) if taker.side is Side.BUY else (maker, taker)
        trade_id = st.next_trade_id
        st.next_trade_id += 1
        buy_row, sell_row = self.ledger.settle(
            buyer=buyer,
            seller=seller,
            maker=maker,
            base=spec.base_asset,
            quote_asset=spec.quote_asset,
            qty=qty,
            price=price,
            trade_id=trade_id,
            now_ms=op.now_ms,
        )
        agg_key = (spec.symbol, taker.order_id, price)
        if op.agg_key == agg_key:
            agg_id = st.next_agg_id - 1
        else:
            agg_id = st.next_agg_id
            st.next_agg_id += 1
            op.agg_key = agg_key
        public = PublicTrade(
            symbol=spec.symbol,
            trade_id=trade_id,
            agg_id=agg_id,
            price=price,
            qty=qty,
            time_ms=op.now_ms,
            is_buyer_maker=buyer is maker,
        )
        st.history.record(public)
        op.trades.setdefault(spec.symbol, []).append(public)
        self.trade_count += 1
        for order in (buyer, seller):
            if not order.has_fill:
                order.has_fill = True
                if order is op.placing:
                    op.placing_first_fill = True
                else:
                    op.first_fills.append(order)
        taker_fill, maker_fill = (buy_row, sell_row) if taker is buyer else (sell_row, buy_row)
        if taker is op.placing:
            op.placing_fills.append(
                Fill(
                    price=price,
                    qty=qty,
                    commission=taker_fill.commission,
                    commission_asset=taker_fill.commission_asset,
                    trade_id=trade_id,
                )
            )
        book = st.own(maker.side)
        book.reduce(price, qty)
        op.touch(spec.symbol, book.is_bid, price)
        if maker.remaining <= 0:
            book.remove(maker)
            maker.on_book = False
            self._close(maker, OrderStatus.FILLED)
        self._report(maker, ExecutionType.TRADE, maker_fill)
        return taker_fill

    def _run_stops(self, st: SymbolState) -> None:
        """Trigger the stop orders the last trade price has reached, until none is left
        (a triggered order's own trades may trigger more)."""
        for _ in range(_STOP_CASCADE_LIMIT):
            last = st.history.last_price
            if last is None or not st.stops:
                return
            fired = [
                o for o in st.stops.values() if _stop_triggered(o.type, o.side, o.stop_price, last)
            ]
            if not fired:
                return
            for order in fired:
                if st.stops.pop(order.order_id, None) is not None:
                    self._trigger(st, order)
        logger.warning("sim.stops.cascade_cut symbol=%s", st.spec.symbol)  # pragma: no cover

    def _trigger(self, st: SymbolState, order: OrderState) -> None:
        op = self._cur()
        order.is_working = True
        order.working_time_ms = op.now_ms
        order.update_time_ms = op.now_ms
        self._report(order, ExecutionType.NEW)
        logger.debug("sim.order.triggered symbol=%s id=%d", order.symbol, order.order_id)
        if order.type in (OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
            self._execute_limit(st, order)
            return
        if order.side is Side.BUY:
            self.ledger.unlock_all(order, op.now_ms)
            order.lock_price = _ZERO
            acct = self.ledger.accounts[order.api_key]
            budget = acct.free.get(st.spec.quote_asset, _ZERO)
            self._execute_market(st, order, budget=budget)
        else:
            self._execute_market(st, order)

    def _finish(self, op: _Op) -> None:
        self.listeners.dispatch(op, self.symbols, self.ledger)
