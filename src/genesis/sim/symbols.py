"""Symbol specifications and exchange filters for the simulator.

A :class:`SymbolSpec` is the simulator's view of one entry of ``exchangeInfo.symbols``: assets,
precisions, trading status and the filters the matching engine enforces (``PRICE_FILTER``,
``LOT_SIZE``, ``MARKET_LOT_SIZE``, ``PERCENT_PRICE_BY_SIDE``, ``NOTIONAL``, ``MAX_NUM_ORDERS``,
``MAX_NUM_ALGO_ORDERS``; see FACTS.md §3 "Filter formats and rules") plus the ones it only
lists because the features behind them are not simulated (``ICEBERG_PARTS``,
``TRAILING_DELTA``). :func:`exchange_info_symbol` renders the exact wire object, with decimals
formatted as Binance does (``"0.01000000"``: 8 decimals).

Defaults follow the live BTCUSDT/ETHUSDT/BNBUSDT filters (tick 0.01; steps 0.00001 / 0.0001 /
0.001). Any other symbol name (``XRPUSDT``) gets generic defaults from :func:`spec_for`, so the
simulator's ``--symbols`` option can list symbols this module has never heard of.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import attrs

__all__ = [
    "DEFAULT_SYMBOLS",
    "ICEBERG_PARTS_LIMIT",
    "KNOWN_QUOTE_ASSETS",
    "ORDER_TYPES",
    "SYMBOL_STATUSES",
    "LotSizeFilter",
    "NotionalFilter",
    "PercentPriceBySideFilter",
    "PriceFilter",
    "SymbolSpec",
    "TrailingDeltaFilter",
    "default_symbols",
    "exchange_info_symbol",
    "fmt_decimal",
    "spec_for",
]

ORDER_TYPES: Final = (
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)
"""Order types the simulator's engine supports, in exchangeInfo's order."""

SYMBOL_STATUSES: Final = frozenset({"TRADING", "END_OF_DAY", "HALT", "BREAK", "CANCEL_ONLY"})
"""Symbol statuses from enums.md (FACTS.md §6)."""

KNOWN_QUOTE_ASSETS: Final = (
    "USDT",
    "USDC",
    "FDUSD",
    "TUSD",
    "BUSD",
    "EUR",
    "TRY",
    "BTC",
    "ETH",
    "BNB",
)
"""Quote assets recognised when splitting a symbol name, longest match first within this order."""

DEFAULT_SYMBOLS: Final = ("BTCUSDT", "ETHUSDT", "BNBUSDT")


def fmt_decimal(value: Decimal, places: int = 8) -> str:
    """Format ``value`` with exactly ``places`` decimals, as Binance's wire strings are.

    ``fmt_decimal(Decimal("0.01"))`` is ``"0.01000000"``. Values with more decimals are rounded
    half-even (only display: the engine keeps exact values).
    """
    return f"{value:.{places}f}"


@attrs.frozen(kw_only=True)
class PriceFilter:
    """``PRICE_FILTER``: each rule is disabled when its value is 0."""

    min_price: Decimal
    max_price: Decimal
    tick_size: Decimal


@attrs.frozen(kw_only=True)
class LotSizeFilter:
    """``LOT_SIZE`` / ``MARKET_LOT_SIZE``: ``qty % stepSize == 0`` since 2023-03 (0 disables)."""

    min_qty: Decimal
    max_qty: Decimal
    step_size: Decimal


@attrs.frozen(kw_only=True)
class NotionalFilter:
    """``NOTIONAL``: ``minNotional <= price × qty <= maxNotional`` (MARKET: as configured)."""

    min_notional: Decimal
    apply_min_to_market: bool
    max_notional: Decimal
    apply_max_to_market: bool
    avg_price_mins: int


@attrs.frozen(kw_only=True)
class PercentPriceBySideFilter:
    """``PERCENT_PRICE_BY_SIDE``: a BUY needs ``avg × bidMultiplierDown <= price <= avg ×
    bidMultiplierUp``, a SELL the same with the ask multipliers, where ``avg`` is the
    volume-weighted average trade price over the last ``avg_price_mins`` minutes (filters.md).

    Defaults are live BTCUSDT's."""

    bid_multiplier_up: Decimal = Decimal(5)
    bid_multiplier_down: Decimal = Decimal("0.2")
    ask_multiplier_up: Decimal = Decimal(5)
    ask_multiplier_down: Decimal = Decimal("0.2")
    avg_price_mins: int = 1


@attrs.frozen(kw_only=True)
class TrailingDeltaFilter:
    """``TRAILING_DELTA`` in basis points (listed only: the simulator has no trailing stops)."""

    min_above: int = 10
    max_above: int = 2000
    min_below: int = 10
    max_below: int = 2000


ICEBERG_PARTS_LIMIT: Final = 100
"""``ICEBERG_PARTS.limit``: 10 in filters.md's example, raised on every symbol to 25, 50 and
(2026-03-12) 100 (FACTS.md changelog 2025-12-02)."""


@attrs.frozen(kw_only=True)
class SymbolSpec:
    """One tradable symbol: assets, precisions, status and filters.

    ``start_price`` is where the simulated market maker starts its random walk. Specs are
    immutable; the exchange replaces a spec with :func:`attrs.evolve` to change ``status``.
    """

    symbol: str
    base_asset: str
    quote_asset: str
    base_precision: int = 8
    quote_precision: int = 8
    status: str = "TRADING"
    price_filter: PriceFilter
    lot_size: LotSizeFilter
    market_lot_size: LotSizeFilter
    notional: NotionalFilter
    percent_price_by_side: PercentPriceBySideFilter | None = attrs.field(
        factory=PercentPriceBySideFilter
    )
    iceberg_parts: int = ICEBERG_PARTS_LIMIT
    trailing_delta: TrailingDeltaFilter = attrs.field(factory=TrailingDeltaFilter)
    max_num_orders: int = 200
    max_num_algo_orders: int = 5
    start_price: Decimal


def _spec(
    symbol: str,
    base: str,
    quote: str,
    *,
    tick: str,
    step: str,
    max_qty: str,
    market_max_qty: str,
    min_notional: str,
    start: str,
) -> SymbolSpec:
    return SymbolSpec(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        price_filter=PriceFilter(
            min_price=Decimal(tick), max_price=Decimal("1000000"), tick_size=Decimal(tick)
        ),
        lot_size=LotSizeFilter(
            min_qty=Decimal(step), max_qty=Decimal(max_qty), step_size=Decimal(step)
        ),
        market_lot_size=LotSizeFilter(
            min_qty=Decimal(0), max_qty=Decimal(market_max_qty), step_size=Decimal(0)
        ),
        notional=NotionalFilter(
            min_notional=Decimal(min_notional),
            apply_min_to_market=True,
            max_notional=Decimal("9000000"),
            apply_max_to_market=False,
            avg_price_mins=5,
        ),
        start_price=Decimal(start),
    )


_KNOWN: Final[dict[str, SymbolSpec]] = {
    "BTCUSDT": _spec(
        "BTCUSDT",
        "BTC",
        "USDT",
        tick="0.01",
        step="0.00001",
        max_qty="9000",
        market_max_qty="100",
        min_notional="5",
        start="60000",
    ),
    "ETHUSDT": _spec(
        "ETHUSDT",
        "ETH",
        "USDT",
        tick="0.01",
        step="0.0001",
        max_qty="9000",
        market_max_qty="2000",
        min_notional="5",
        start="3000",
    ),
    "BNBUSDT": _spec(
        "BNBUSDT",
        "BNB",
        "USDT",
        tick="0.01",
        step="0.001",
        max_qty="9000",
        market_max_qty="9000",
        min_notional="5",
        start="600",
    ),
}


def spec_for(symbol: str) -> SymbolSpec:
    """The spec for ``symbol``: a realistic default for the known three, generic otherwise.

    Generic symbols split the name on a known quote asset (``XRPUSDT`` → XRP/USDT; a name with no
    known quote asset splits into its first three letters and the rest) and use tick 0.0001,
    step 0.1, min notional 5 and a start price of 1 (for a stablecoin quote; 0.001 for a BTC/ETH/BNB
    quote, with tick 0.00000001 and step 0.01).

    Raises:
        ValueError: the name is not upper-case alphanumeric or is shorter than 5 characters.
    """
    if symbol in _KNOWN:
        return _KNOWN[symbol]
    if len(symbol) < 5 or not symbol.isalnum() or symbol != symbol.upper():
        raise ValueError(f"bad symbol name {symbol!r}")
    quote = next(
        (q for q in KNOWN_QUOTE_ASSETS if symbol.endswith(q) and len(symbol) > len(q) + 1), None
    )
    base, quote = (symbol[: -len(quote)], quote) if quote else (symbol[:3], symbol[3:])
    if quote in ("BTC", "ETH", "BNB"):
        return _spec(
            symbol,
            base,
            quote,
            tick="0.00000001",
            step="0.01",
            max_qty="9000000",
            market_max_qty="1000000",
            min_notional="0.0001",
            start="0.001",
        )
    return _spec(
        symbol,
        base,
        quote,
        tick="0.0001",
        step="0.1",
        max_qty="9000000",
        market_max_qty="1000000",
        min_notional="5",
        start="1",
    )


def default_symbols() -> tuple[SymbolSpec, ...]:
    """BTCUSDT, ETHUSDT and BNBUSDT with their realistic defaults."""
    return tuple(_KNOWN[name] for name in DEFAULT_SYMBOLS)


def _lot_wire(kind: str, lot: LotSizeFilter) -> dict[str, object]:
    return {
        "filterType": kind,
        "minQty": fmt_decimal(lot.min_qty),
        "maxQty": fmt_decimal(lot.max_qty),
        "stepSize": fmt_decimal(lot.step_size),
    }


def _multiplier_wire(value: Decimal) -> str:
    # Binance prints multipliers with the symbol's price precision less trailing zeros ("5",
    # "0.2"; filters.md and live BTCUSDT).
    return format(value.normalize(), "f")


def exchange_info_symbol(spec: SymbolSpec) -> dict[str, object]:
    """The ``exchangeInfo.symbols[]`` object for ``spec``, exactly as Binance shapes it.

    Key set and order follow the current docs (FACTS.md §3; samples.json
    ``rest.exchangeInfo.BNBBTC``). Features the simulator does not implement (iceberg, order
    lists, trailing stops, cancel-replace, amend, pegged orders, margin) are advertised as
    ``false`` so well-behaved clients do not try them.
    """
    pf = spec.price_filter
    nf = spec.notional
    td = spec.trailing_delta
    pps: list[dict[str, object]] = []
    if spec.percent_price_by_side is not None:
        pp = spec.percent_price_by_side
        pps.append(
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": _multiplier_wire(pp.bid_multiplier_up),
                "bidMultiplierDown": _multiplier_wire(pp.bid_multiplier_down),
                "askMultiplierUp": _multiplier_wire(pp.ask_multiplier_up),
                "askMultiplierDown": _multiplier_wire(pp.ask_multiplier_down),
                "avgPriceMins": pp.avg_price_mins,
            }
        )
    return {
        "symbol": spec.symbol,
        "status": spec.status,
        "baseAsset": spec.base_asset,
        "baseAssetPrecision": spec.base_precision,
        "quoteAsset": spec.quote_asset,
        "quotePrecision": spec.quote_precision,
        "quoteAssetPrecision": spec.quote_precision,
        "baseCommissionPrecision": spec.base_precision,
        "quoteCommissionPrecision": spec.quote_precision,
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "opoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "amendAllowed": False,
        "pegInstructionsAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt_decimal(pf.min_price),
                "maxPrice": fmt_decimal(pf.max_price),
                "tickSize": fmt_decimal(pf.tick_size),
            },
            _lot_wire("LOT_SIZE", spec.lot_size),
            {"filterType": "ICEBERG_PARTS", "limit": spec.iceberg_parts},
            _lot_wire("MARKET_LOT_SIZE", spec.market_lot_size),
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": td.min_above,
                "maxTrailingAboveDelta": td.max_above,
                "minTrailingBelowDelta": td.min_below,
                "maxTrailingBelowDelta": td.max_below,
            },
            *pps,
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt_decimal(nf.min_notional),
                "applyMinToMarket": nf.apply_min_to_market,
                "maxNotional": fmt_decimal(nf.max_notional),
                "applyMaxToMarket": nf.apply_max_to_market,
                "avgPriceMins": nf.avg_price_mins,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": spec.max_num_orders},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": spec.max_num_algo_orders},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }
