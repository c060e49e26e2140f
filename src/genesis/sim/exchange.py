"""The simulator's exchange: one facade over the request parser, the engine and the history.

Pure and synchronous: every call that depends on time takes ``now_ms`` (epoch ms, from
:class:`genesis.sim.clock.SimClock`), so the REST server, the WS API and the market maker drive it
from their Trio tasks and tests drive it with plain numbers. Nothing here blocks or awaits.

:class:`Exchange` is built from parts with one job each, the way trio builds its ``Runner``:

* :mod:`genesis.sim.request`: raw wire parameters → a typed
  :class:`~genesis.sim.request.NewOrder` (the syntax rejections -1100/-1102/-1106/-1111/...);
* :mod:`genesis.sim.filters`: the symbol filters on that typed request (-1013);
* :mod:`genesis.sim.engine`: books, matching, stops, the -2010 rejections and the listener
  fan-out, over :mod:`genesis.sim.ledger` (accounts, balances, locks, fees, order queries);
* :mod:`genesis.sim.history`: public trades, kline buckets and the O(1) rolling windows;
* :mod:`genesis.sim.payloads`: every wire shape (rows, responses, events, stream payloads);
* :mod:`genesis.sim.model`: the value types, re-exported here under their historical names.

Contract for the other simulator modules (REST, streams, WS API, market feed):

* Validation follows Binance (FACTS.md §3, §5). A rejected request raises :class:`SimReject`
  (``code``, ``msg``, from the catalog in :mod:`genesis.sim.errors`). Numeric parameters may be
  passed as the raw wire strings.
* Results are frozen snapshots (:class:`Order`, :class:`Fill`, :class:`AccountTrade`). Wire
  forms come from :func:`result_to_wire` (ACK/RESULT/FULL), :func:`order_to_wire` (GET order,
  openOrders, allOrders, cancel responses), :func:`account_trade_to_wire` (myTrades rows) and the
  market-data methods, which return wire objects directly.
* Listeners are plain sync callables called after each engine operation completes (never in the
  middle of matching), in this order: public trades, the book diff, user events, first fills.
  They must not block; they may call back into the exchange.
  - ``add_trade_listener(cb(symbol, trades))``: public trades of one operation (for ``@trade``
    and ``@aggTrade``);
  - ``add_book_listener(cb(diff))``: one :class:`BookDiff` per operation that changed a book
    (``@depth`` diffs and ``@bookTicker``); ``U``/``u`` chain without gaps;
  - ``add_user_listener(api_key, cb(event))``: wire-form ``executionReport`` and
    ``outboundAccountPosition`` dicts for that account (the WS API wraps them as
    ``{"subscriptionId": N, "event": {...}}``); built only when someone listens;
  - ``add_first_fill_listener(cb(api_key, order))``: an order got its first fill in an operation
    *other than its own placement* (a resting order hit later, a stop order triggered later).
    First fills during placement are reported in :attr:`OrderResult.first_fill` instead, so the
    rate limiter decrements the unfilled-order count exactly once per order.
* Memory is bounded: public trades per symbol (:data:`MAX_TRADES_PER_SYMBOL`), closed orders and
  own trades per account (:data:`MAX_CLOSED_ORDERS_PER_ACCOUNT`, :data:`MAX_TRADES_PER_ACCOUNT`),
  1-second buckets (:data:`SECOND_BUCKETS`) and 1-minute buckets (:data:`MINUTE_BUCKETS`) per
  symbol for klines and the rolling 24 h ticker. Older history is forgotten (queries for it
  return nothing, and ``GET order`` for a forgotten order answers -2013).

Beyond the names in the brief: ``place_order(..., test=True)`` serves ``POST order/test``;
``ticker_stats``, ``kline``, ``book_levels``, ``top_of_book``, ``update_id`` and
``last_price`` feed the stream payloads; ``open_order_ids`` serves the market maker;
``statistics()`` counts orders and trades. ``execution_report`` takes ``on_book`` (``w``)
instead of an ``orig_client_order_id`` argument: a CANCELED report takes ``c``/``C`` from the
order snapshot's ``cancel_client_order_id``/``client_order_id``.

Deviations from Binance are listed in :data:`KNOWN_DEVIATIONS`.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import attrs

from genesis.sim.engine import Engine
from genesis.sim.errors import (
    INVALID_CANCEL_RESTRICTIONS,
    SimReject,
)
from genesis.sim.filters import check_filters
from genesis.sim.history import kline_next_open, kline_open_time
from genesis.sim.ledger import Account
from genesis.sim.marketdata import MarketDataView
from genesis.sim.model import (
    DEFAULT_BALANCES,
    DEFAULT_COMMISSION_RATE,
    DEFAULT_OTHER_ASSET_BALANCE,
    MAX_CLOSED_ORDERS_PER_ACCOUNT,
    MAX_TRADES_PER_ACCOUNT,
    MAX_TRADES_PER_SYMBOL,
    MINUTE_BUCKETS,
    SECOND_BUCKETS,
    AccountTrade,
    Balance,
    BookDiff,
    BookListener,
    ExchangeStatistics,
    ExecutionType,
    Fill,
    FirstFillListener,
    JsonObject,
    Order,
    OrderResult,
    OrderStatus,
    OrderType,
    PublicTrade,
    Side,
    TickerStats,
    TimeInForce,
    TradeListener,
    UserListener,
    WireKind,
)
from genesis.sim.payloads import (
    account_trade_to_wire,
    execution_report,
    order_to_wire,
    result_to_wire,
)
from genesis.sim.request import (
    both_empty,
    check_client_id,
    parse_new_order,
)
from genesis.sim.symbols import SymbolSpec, fmt_decimal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "DEFAULT_BALANCES",
    "DEFAULT_COMMISSION_RATE",
    "DEFAULT_OTHER_ASSET_BALANCE",
    "KNOWN_DEVIATIONS",
    "MAX_CLOSED_ORDERS_PER_ACCOUNT",
    "MAX_TRADES_PER_ACCOUNT",
    "MAX_TRADES_PER_SYMBOL",
    "MINUTE_BUCKETS",
    "SECOND_BUCKETS",
    "Account",
    "AccountTrade",
    "Balance",
    "BookDiff",
    "BookListener",
    "Exchange",
    "ExchangeStatistics",
    "ExecutionType",
    "Fill",
    "FirstFillListener",
    "JsonObject",
    "Order",
    "OrderResult",
    "OrderStatus",
    "OrderType",
    "PublicTrade",
    "Side",
    "TickerStats",
    "TimeInForce",
    "TradeListener",
    "UserListener",
    "WireKind",
    "account_trade_to_wire",
    "execution_report",
    "kline_next_open",
    "kline_open_time",
    "order_to_wire",
    "result_to_wire",
]

logger = logging.getLogger(__name__)

KNOWN_DEVIATIONS: Final = (
    "No iceberg orders, order lists (OCO/OTO/OPO), trailing stops, pegged orders, amend or "
    "cancel-replace; exchangeInfo advertises them as not allowed (ICEBERG_PARTS and "
    "TRAILING_DELTA are listed, with nothing to apply them to).",
    "Self-trade prevention is always NONE (self-trades execute, as on Binance with NONE).",
    "Filters enforced: PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, PERCENT_PRICE_BY_SIDE, NOTIONAL, "
    "MAX_NUM_ORDERS, MAX_NUM_ALGO_ORDERS (counting open STOP_LOSS/TAKE_PROFIT[_LIMIT] orders, "
    "triggered or not).",
    "PERCENT_PRICE_BY_SIDE and NOTIONAL use the volume-weighted average price over avgPriceMins; "
    "with no trade in that window, the last trade price; before the symbol's first trade they "
    "are not evaluated. There is no reference price (referencePrice, 2026-05).",
    "PERCENT_PRICE_BY_SIDE applies to orders with a price (LIMIT, LIMIT_MAKER, "
    "STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT), not to MARKET orders or stop prices.",
    "One book update id per engine operation (a placement with its whole match, a cancel).",
    "Rolling 24 h ticker and klines aggregate 1-minute buckets (1s klines: 1-second buckets); "
    "the 24 h window slides by whole minutes; history older than the bucket caps is forgotten.",
    "A triggered STOP_LOSS/TAKE_PROFIT BUY executes as far as the account's free quote balance "
    "allows and expires the rest; at placement it locks quantity × stopPrice.",
    "Cancels are accepted while a symbol is halted (like CANCEL_ONLY).",
    "newClientOrderId uniqueness is checked per account and symbol among open orders.",
    "DELETE order with orderId and a non-matching origClientOrderId answers -2011 (GET order "
    "answers -2039 as documented).",
    "A quote-quantity MARKET order is FILLED when what is left cannot buy one more lot step at "
    "the next price, EXPIRED when the book ran out.",
    "A triggered stop order reports x=NEW with w=true before its trades.",
    "executionReport omits v (prevented match id): there is no STP.",
    "The NOTIONAL filter is skipped for MARKET orders before the symbol's first trade (no "
    "average price yet).",
)

_ZERO: Final = Decimal(0)
_CANCEL_RESTRICTIONS: Final = frozenset({"ONLY_NEW", "ONLY_PARTIALLY_FILLED"})


class Exchange(MarketDataView):
    """The exchange: symbols, accounts, books, matching and market-data history.

    The market-data queries (``depth`` .. ``avg_price``) are inherited from
    :class:`~genesis.sim.marketdata.MarketDataView`; trading and accounts are here.

    Args:
        symbols: the tradable symbols (see :func:`genesis.sim.symbols.default_symbols`).
        seed: seeds generated client order ids (the market maker has its own RNG).
    """

    def __init__(self, symbols: Iterable[SymbolSpec], *, seed: int = 0) -> None:
        super().__init__(Engine({s.symbol: s for s in symbols}, seed=seed))
        self._ledger = self._engine.ledger
        self._listeners = self._engine.listeners
        self._orders_rejected = 0

    # --- configuration -------------------------------------------------------------------

    def symbol_specs(self) -> list[SymbolSpec]:
        """All symbols in configuration order (with their current status)."""
        return [st.spec for st in self._engine.symbols.values()]

    def spec(self, symbol: str) -> SymbolSpec:
        """The spec of ``symbol``. Raises :class:`SimReject` -1121 "Invalid symbol."."""
        return self._symbol(symbol).spec

    def set_symbol_status(self, symbol: str, status: str) -> None:
        """Set a symbol's status (``TRADING``, ``HALT``, ``BREAK``...). Orders on a symbol that is
        not ``TRADING`` are rejected with -2010 "Market is closed."; resting orders stay."""
        st = self._symbol(symbol)
        st.spec = attrs.evolve(st.spec, status=status)
        logger.info("sim.symbol.status symbol=%s status=%s", symbol, status)

    def add_account(
        self,
        api_key: str,
        balances: dict[str, Decimal] | None = None,
        *,
        maker_rate: Decimal = DEFAULT_COMMISSION_RATE,
        taker_rate: Decimal = DEFAULT_COMMISSION_RATE,
    ) -> Account:
        """Create (or replace) the account of ``api_key``.

        ``balances=None`` funds it with :data:`DEFAULT_BALANCES` plus
        :data:`DEFAULT_OTHER_ASSET_BALANCE` of every other asset of the configured symbols.
        """
        if balances is None:
            balances = dict(DEFAULT_BALANCES)
            for st in self._engine.symbols.values():
                for asset in (st.spec.base_asset, st.spec.quote_asset):
                    balances.setdefault(asset, DEFAULT_OTHER_ASSET_BALANCE)
        return self._ledger.add_account(
            api_key, balances, maker_rate=maker_rate, taker_rate=taker_rate
        )

    def has_account(self, api_key: str) -> bool:
        return api_key in self._ledger.accounts

    def balances(self, api_key: str) -> dict[str, Balance]:
        """A copy of the account's balances. Raises -2015 for an unknown key."""
        return self._ledger.balances(api_key)

    def fees_collected(self) -> dict[str, Decimal]:
        """Commissions charged so far, per asset (they leave the accounts)."""
        return dict(self._ledger.fees)

    def statistics(self) -> ExchangeStatistics:
        accounts = self._ledger.accounts
        return ExchangeStatistics(
            orders_placed=self._engine.orders_placed,
            orders_rejected=self._orders_rejected,
            trades=self._engine.trade_count,
            accounts=len(accounts),
            open_orders=sum(len(a.open_orders) for a in accounts.values()),
        )

    # --- listeners ------------------------------------------------------------------------

    def add_trade_listener(self, cb: TradeListener) -> Callable[[], None]:
        """Call ``cb(symbol, trades)`` after every operation that traded; returns a remover."""
        return self._listeners.add_trade(cb)

    def add_book_listener(self, cb: BookListener) -> Callable[[], None]:
        """Call ``cb(diff)`` after every operation that changed a book; returns a remover."""
        return self._listeners.add_book(cb)

    def add_user_listener(self, api_key: str, cb: UserListener) -> Callable[[], None]:
        """Call ``cb(event)`` with each user-data event of ``api_key``; returns a remover."""
        return self._listeners.add_user(api_key, cb)

    def add_first_fill_listener(self, cb: FirstFillListener) -> Callable[[], None]:
        """Call ``cb(api_key, order)`` when a resting/triggered order gets its first fill."""
        return self._listeners.add_first_fill(cb)

    # --- trading --------------------------------------------------------------------------

    def place_order(
        self,
        api_key: str,
        *,
        symbol: str | None,
        side: str | None,
        type: str | None,
        quantity: Decimal | str | None = None,
        quote_order_qty: Decimal | str | None = None,
        price: Decimal | str | None = None,
        stop_price: Decimal | str | None = None,
        time_in_force: str | None = None,
        new_client_order_id: str | None = None,
        new_order_resp_type: str | None = None,
        now_ms: int,
        test: bool = False,
    ) -> OrderResult:
        """Validate and execute a new order (``POST /api/v3/order``).

        Parameters are the request's values (raw wire strings are fine; ``None`` or ``""``
        means "not sent"). ``test=True`` validates only (``POST /api/v3/order/test``): all
        API-level checks run, nothing reaches the engine, and the returned result is a dummy.

        Raises:
            SimReject: -2015 unknown API key; -1121 invalid symbol; the syntax rejections of
                :func:`genesis.sim.request.parse_new_order`; -1013 filter failure
                (:func:`genesis.sim.filters.check_filters`); -2010 engine rejection
                (:meth:`genesis.sim.engine.Engine.place`).
        """
        try:
            acct = self._ledger.account(api_key)
            st = self._symbol(symbol)
            req = parse_new_order(
                st.spec.symbol,
                side=side,
                type=type,
                quantity=quantity,
                quote_order_qty=quote_order_qty,
                price=price,
                stop_price=stop_price,
                time_in_force=time_in_force,
                new_client_order_id=new_client_order_id,
                new_order_resp_type=new_order_resp_type,
            )
            sym = st.spec.symbol
            check_filters(
                st.spec,
                req,
                avg_price=lambda mins: st.history.avg_price(mins, now_ms),
                open_orders=acct.open_count.get(sym, 0),
                open_algo_orders=acct.algo_count.get(sym, 0),
            )
            if test:
                return OrderResult(
                    order=_dummy_order(req.symbol, req.side, req.type, req.time_in_force, now_ms),
                    fills=(),
                    resp_type=req.resp_type,
                    first_fill=False,
                    transact_time_ms=now_ms,
                )
            order, fills, first_fill = self._engine.place(api_key, req, now_ms)
        except SimReject as exc:
            self._orders_rejected += 1
            logger.debug("sim.order.rejected code=%d msg=%s", exc.code, exc.msg)
            raise
        return OrderResult(
            order=order,
            fills=fills,
            resp_type=req.resp_type,
            first_fill=first_fill,
            transact_time_ms=now_ms,
        )

    def cancel_order(
        self,
        api_key: str,
        *,
        symbol: str | None,
        order_id: int | None = None,
        orig_client_order_id: str | None = None,
        new_client_order_id: str | None = None,
        cancel_restrictions: str | None = None,
        now_ms: int,
    ) -> Order:
        """Cancel one open order (``DELETE /api/v3/order``); returns the canceled order.

        Raises:
            SimReject: -1102 "Param 'origClientOrderId' or 'orderId' must be sent, but both were
                empty/null!"; -2011 "Unknown order sent." (also for an id mismatch or a closed
                order); -2011 "Order was not canceled due to cancel restrictions."; -1145 bad
                cancelRestrictions; -1121 invalid symbol; -2015 unknown API key.
        """
        self._ledger.account(api_key)
        st = self._symbol(symbol)
        orig_cid = orig_client_order_id or None
        if order_id is None and orig_cid is None:
            raise both_empty("origClientOrderId", "orderId")
        if cancel_restrictions and cancel_restrictions not in _CANCEL_RESTRICTIONS:
            raise SimReject(INVALID_CANCEL_RESTRICTIONS)
        cancel_cid = check_client_id("newClientOrderId", new_client_order_id)
        order = self._ledger.find_open(api_key, st.spec.symbol, order_id, orig_cid)
        self._engine.cancel(
            st,
            order,
            cancel_cid or self._engine.new_client_id(),
            cancel_restrictions or None,
            now_ms,
        )
        return order.snapshot()

    def cancel_all(self, api_key: str, *, symbol: str | None, now_ms: int) -> list[Order]:
        """Cancel every open order of the account on ``symbol`` (``DELETE openOrders``).

        Raises:
            SimReject: -2011 "Unknown order sent." when nothing is open; -1121; -1102; -2015.
        """
        self._ledger.account(api_key)
        st = self._symbol(symbol)
        return [o.snapshot() for o in self._engine.cancel_all(api_key, st, now_ms)]

    def query_order(
        self,
        api_key: str,
        *,
        symbol: str | None,
        order_id: int | None = None,
        orig_client_order_id: str | None = None,
    ) -> Order:
        """``GET /api/v3/order``: look up by orderId (preferred) or origClientOrderId.

        Raises:
            SimReject: -2013 "Order does not exist."; -2039 "Client order ID is not correct for
                this order ID." when both are given and disagree; -1102 when neither is.
        """
        self._ledger.account(api_key)
        sym = self._symbol(symbol).spec.symbol
        return self._ledger.query_order(api_key, sym, order_id, orig_client_order_id)

    def open_orders(self, api_key: str, symbol: str | None = None) -> list[Order]:
        """Open orders of the account (all symbols when ``symbol`` is None), oldest first."""
        self._ledger.account(api_key)
        sym = self._symbol(symbol).spec.symbol if symbol else None
        return self._ledger.open_orders(api_key, sym)

    def open_order_ids(self, api_key: str, symbol: str) -> set[int]:
        """Ids of the account's open orders on ``symbol`` (cheap; used by the market maker)."""
        return self._ledger.open_order_ids(api_key, symbol)

    def all_orders(
        self,
        api_key: str,
        symbol: str | None,
        *,
        order_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> list[Order]:
        """``GET /api/v3/allOrders``: open and remembered closed orders, by orderId ascending.

        With ``order_id``: orders with id >= it; else the most recent ``limit`` (clamped to
        1..1000) within the optional time range (at most 24 h: -1127 otherwise).
        """
        self._ledger.account(api_key)
        sym = self._symbol(symbol).spec.symbol
        return self._ledger.all_orders(
            api_key, sym, order_id=order_id, start_time=start_time, end_time=end_time, limit=limit
        )

    def my_trades(
        self,
        api_key: str,
        symbol: str | None,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> list[AccountTrade]:
        """``GET /api/v3/myTrades`` rows (oldest first), with Binance's parameter combinations.

        Allowed: none, orderId, startTime, endTime, fromId, startTime+endTime, orderId+fromId.

        Raises:
            SimReject: -1128 for another combination; -1127 for a time range above 24 h;
                -1121; -1102; -2015.
        """
        self._ledger.account(api_key)
        sym = self._symbol(symbol).spec.symbol
        return self._ledger.my_trades(
            api_key,
            sym,
            order_id=order_id,
            from_id=from_id,
            start_time=start_time,
            end_time=end_time,
            limit=limit,
        )

    def account(self, api_key: str, *, now_ms: int, omit_zero_balances: bool = False) -> JsonObject:
        """``GET /api/v3/account`` in wire form (keys as samples.json ``rest.account``).

        ``now_ms`` is unused today (``updateTime`` is the last balance change) and kept for the
        REST layer's uniform calling convention.
        """
        del now_ms
        acct = self._ledger.account(api_key)
        rows: list[JsonObject] = []
        for asset, bal in self._ledger.balances(api_key).items():
            if omit_zero_balances and bal.free == 0 and bal.locked == 0:
                continue
            rows.append({"asset": asset, "free": _f8(bal.free), "locked": _f8(bal.locked)})
        return {
            "makerCommission": int(acct.maker_rate * 10_000),
            "takerCommission": int(acct.taker_rate * 10_000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": _f8(acct.maker_rate),
                "taker": _f8(acct.taker_rate),
                "buyer": _f8(_ZERO),
                "seller": _f8(_ZERO),
            },
            "canTrade": acct.can_trade,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": acct.update_time_ms,
            "accountType": "SPOT",
            "balances": rows,
            "permissions": ["SPOT"],
            "uid": acct.uid,
        }


def _f8(value: Decimal) -> str:
    return fmt_decimal(value)


def _dummy_order(symbol: str, side: Side, otype: OrderType, tif: TimeInForce, now_ms: int) -> Order:
    return Order(
        symbol=symbol,
        order_id=-1,
        client_order_id="",
        side=side,
        type=otype,
        time_in_force=tif,
        price=_ZERO,
        stop_price=_ZERO,
        orig_qty=_ZERO,
        orig_quote_order_qty=_ZERO,
        executed_qty=_ZERO,
        cummulative_quote_qty=_ZERO,
        status=OrderStatus.NEW,
        time_ms=now_ms,
        update_time_ms=now_ms,
        working_time_ms=now_ms,
        is_working=False,
    )
