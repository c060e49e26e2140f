"""A seeded random-walk market maker that keeps the simulator's books alive.

Every :meth:`MarketMaker.step` moves a fair price per symbol (a Gaussian random walk in whole
ticks with a weak pull back to the start price), keeps a ladder of maker quotes on a fixed
price grid around it (``levels`` per side, so ``depth20`` is always full), refreshes one random
level's size now and then, and with probability ``taker_probability`` sends a MARKET order that
crosses the spread and prints public trades.

It trades through the real engine (:meth:`Exchange.place_order` / :meth:`Exchange.cancel_order`)
with its own, hugely funded, fee-free account, so public trades, the book, klines and tickers all
come from the same matching as user orders. A user LIMIT order at or through the market is
therefore eventually filled by the maker's quotes or its taker flow, as on a real venue.

Quotes live on a grid (multiples of ``spacing`` ticks), so when the fair price moves only the
levels at the edges change: a step costs a handful of engine operations, not a full requote.

Deterministic: given the same seed, the same symbols and the same sequence of ``now_ms`` values
(and no user orders), the maker makes the same decisions and the engine prints the same trades.
The random draws are floats; they are turned into whole ticks and whole lot steps before they
come near a price or a quantity.
"""

from __future__ import annotations

import logging
import random
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Final

import attrs

from genesis.sim.errors import SimReject
from genesis.sim.exchange import Side

if TYPE_CHECKING:
    from genesis.sim.exchange import Exchange
    from genesis.sim.symbols import SymbolSpec

__all__ = [
    "MARKET_MAKER_API_KEY",
    "MarketMaker",
    "MarketMakerConfig",
    "MarketMakerStatistics",
]

logger = logging.getLogger(__name__)

MARKET_MAKER_API_KEY: Final = "sim-market-maker"
"""The API key of the maker's own account (not a real credential; never accepted by REST)."""

_FUNDING: Final = Decimal(10) ** 12


@attrs.frozen(kw_only=True)
class MarketMakerConfig:
    """Tuning of the simulated market.

    Attributes:
        levels: quotes per side (>= 20 so ``depth20`` is full).
        spacing_bps: grid spacing in basis points of the start price (at least one tick).
        vol_per_step: standard deviation of the fair price move per step, as a fraction of the
            price (0.00003 at 10 steps/s is about 0.6 % per hour).
        reversion_per_step: fraction of the distance to the start price recovered per step.
        taker_probability: chance per step and symbol of a crossing MARKET order.
        refresh_probability: chance per step and symbol of re-sizing one random level.
        level_notional: typical quote notional of one level (sizes are drawn around it).
    """

    levels: int = 25
    spacing_bps: Decimal = Decimal("0.2")
    vol_per_step: float = 0.00003
    reversion_per_step: float = 0.0001
    taker_probability: float = 0.3
    refresh_probability: float = 0.5
    level_notional: Decimal = Decimal(2000)


@attrs.frozen(kw_only=True)
class MarketMakerStatistics:
    steps: int
    quotes_placed: int
    quotes_canceled: int
    taker_orders: int
    rejects: int


@attrs.define(eq=False)
class _Book:
    """The maker's view of one symbol: fair price in ticks and its live quotes by price."""

    spec: SymbolSpec
    tick: Decimal
    start_ticks: int
    fair_ticks: int
    spacing_ticks: int
    min_steps: int
    max_steps: int
    bids: dict[Decimal, int] = attrs.field(factory=dict)
    asks: dict[Decimal, int] = attrs.field(factory=dict)


class MarketMaker:
    """Seeded market maker over every symbol of ``exchange``.

    Args:
        exchange: the engine to trade on; the maker's account is created here.
        seed: seeds the maker's own ``random.Random``.
        config: market tuning.
        api_key: the maker account's key.
    """

    def __init__(
        self,
        exchange: Exchange,
        *,
        seed: int = 0,
        config: MarketMakerConfig | None = None,
        api_key: str = MARKET_MAKER_API_KEY,
    ) -> None:
        self._exchange = exchange
        self._config = config if config is not None else MarketMakerConfig()
        self._rng = random.Random(seed)
        self._api_key = api_key
        self._books: dict[str, _Book] = {}
        assets: set[str] = set()
        for spec in exchange.symbol_specs():
            assets.update((spec.base_asset, spec.quote_asset))
            tick = spec.price_filter.tick_size
            step = spec.lot_size.step_size
            start_ticks = int(spec.start_price / tick)
            spacing = (
                spec.start_price * self._config.spacing_bps / 10_000 / tick
            ).to_integral_value(ROUND_HALF_UP)
            base_qty = self._config.level_notional / spec.start_price
            min_steps = max(1, int(base_qty / 5 / step), int(spec.lot_size.min_qty / step))
            self._books[spec.symbol] = _Book(
                spec=spec,
                tick=tick,
                start_ticks=start_ticks,
                fair_ticks=start_ticks,
                spacing_ticks=max(1, int(spacing)),
                min_steps=min_steps,
                max_steps=max(min_steps, int(base_qty * 2 / step)),
            )
        exchange.add_account(
            api_key,
            dict.fromkeys(sorted(assets), _FUNDING),
            maker_rate=Decimal(0),
            taker_rate=Decimal(0),
        )
        self._steps = 0
        self._placed = 0
        self._canceled = 0
        self._takers = 0
        self._rejects = 0

    @property
    def api_key(self) -> str:
        return self._api_key

    def fair_price(self, symbol: str) -> Decimal:
        """The current fair price of ``symbol`` (a multiple of its tick)."""
        book = self._books[symbol]
        return book.fair_ticks * book.tick

    def statistics(self) -> MarketMakerStatistics:
        return MarketMakerStatistics(
            steps=self._steps,
            quotes_placed=self._placed,
            quotes_canceled=self._canceled,
            taker_orders=self._takers,
            rejects=self._rejects,
        )

    def step(self, now_ms: int) -> None:
        """Move every fair price, re-quote, maybe trade. Synchronous; never blocks."""
        self._steps += 1
        cfg = self._config
        for symbol, book in self._books.items():
            drift = (book.start_ticks - book.fair_ticks) * cfg.reversion_per_step
            move = self._rng.gauss(drift, book.fair_ticks * cfg.vol_per_step)
            book.fair_ticks = max(book.spacing_ticks * 4, book.fair_ticks + round(move))
            if book.spec.status != "TRADING":
                continue
            self._requote(symbol, book, now_ms)
            if self._rng.random() < cfg.refresh_probability:
                self._refresh_one(symbol, book, now_ms)
            if self._rng.random() < cfg.taker_probability:
                self._take(symbol, book, now_ms)

    # --- internals -------------------------------------------------------------------------

    def _desired(self, book: _Book) -> tuple[list[Decimal], list[Decimal]]:
        sp = book.spacing_ticks
        best_bid_k = (book.fair_ticks - (sp + 1) // 2) // sp
        levels = self._config.levels
        bids = [(best_bid_k - i) * sp * book.tick for i in range(levels)]
        asks = [(best_bid_k + 1 + i) * sp * book.tick for i in range(levels)]
        return [p for p in bids if p > 0], asks

    def _requote(self, symbol: str, book: _Book, now_ms: int) -> None:
        live = self._exchange.open_order_ids(self._api_key, symbol)
        want_bids, want_asks = self._desired(book)
        for quotes, want in ((book.bids, set(want_bids)), (book.asks, set(want_asks))):
            for price, oid in list(quotes.items()):
                if oid not in live:
                    del quotes[price]  # filled by someone's taker order
                elif price not in want:
                    del quotes[price]
                    self._cancel(symbol, oid, now_ms)
        for side, quotes, want_list in (
            (Side.BUY, book.bids, want_bids),
            (Side.SELL, book.asks, want_asks),
        ):
            for price in want_list:
                if price not in quotes:
                    self._quote(symbol, book, side, quotes, price, now_ms)

    def _refresh_one(self, symbol: str, book: _Book, now_ms: int) -> None:
        side = Side.BUY if self._rng.random() < 0.5 else Side.SELL
        quotes = book.bids if side is Side.BUY else book.asks
        if not quotes:
            return
        price = self._rng.choice(sorted(quotes))
        self._cancel(symbol, quotes.pop(price), now_ms)
        self._quote(symbol, book, side, quotes, price, now_ms)

    def _size(self, book: _Book, scale: int = 1) -> Decimal:
        steps = self._rng.randint(book.min_steps, book.max_steps * scale)
        return steps * book.spec.lot_size.step_size

    def _quote(
        self,
        symbol: str,
        book: _Book,
        side: Side,
        quotes: dict[Decimal, int],
        price: Decimal,
        now_ms: int,
    ) -> None:
        try:
            result = self._exchange.place_order(
                self._api_key,
                symbol=symbol,
                side=side.value,
                type="LIMIT",
                time_in_force="GTC",
                quantity=self._size(book),
                price=price,
                new_order_resp_type="ACK",
                now_ms=now_ms,
            )
        except SimReject as exc:
            self._rejects += 1
            logger.debug("sim.maker.quote_rejected symbol=%s code=%d", symbol, exc.code)
            return
        self._placed += 1
        if result.order.status.is_open:
            quotes[price] = result.order.order_id

    def _cancel(self, symbol: str, order_id: int, now_ms: int) -> None:
        try:
            self._exchange.cancel_order(
                self._api_key, symbol=symbol, order_id=order_id, now_ms=now_ms
            )
        except SimReject:
            return  # already filled in this step
        self._canceled += 1

    def _take(self, symbol: str, book: _Book, now_ms: int) -> None:
        side = Side.BUY if self._rng.random() < 0.5 else Side.SELL
        try:
            self._exchange.place_order(
                self._api_key,
                symbol=symbol,
                side=side.value,
                type="MARKET",
                quantity=self._size(book, scale=2),
                new_order_resp_type="ACK",
                now_ms=now_ms,
            )
        except SimReject as exc:
            self._rejects += 1
            logger.debug("sim.maker.taker_rejected symbol=%s code=%d", symbol, exc.code)
            return
        self._takers += 1
