"""What ``GET /api/v3/exchangeInfo`` tells a client: rate limits and per-symbol trading rules.

Values only; :mod:`genesis.models.codec` builds them from the wire. A filter whose rule Binance
disables with a zero (``minPrice: "0.00000000"``) is kept as ``Decimal(0)``: the checks treat
zero as "no rule", as Binance does.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

import attrs

from genesis.models._checks import optional_non_negative_decimal

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = [
    "FALLBACK_RATE_LIMITS",
    "ExchangeInfo",
    "RateLimit",
    "RateLimitType",
    "SymbolFilters",
    "SymbolInfo",
]


class RateLimitType(enum.Enum):
    """Binance's ``rateLimitType``."""

    REQUEST_WEIGHT = "REQUEST_WEIGHT"
    ORDERS = "ORDERS"
    RAW_REQUESTS = "RAW_REQUESTS"
    CONNECTIONS = "CONNECTIONS"


_INTERVAL_S: Final = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86_400}
_HEADER_LETTER: Final = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}


def _interval(_inst: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _INTERVAL_S:
        raise ValueError(f"interval must be one of {sorted(_INTERVAL_S)}, got {value!r}")


@attrs.frozen(kw_only=True)
class RateLimit:
    """One ``rateLimits`` entry: at most ``limit`` per ``interval_num`` × ``interval``.

    Binance counts each in fixed, calendar-aligned windows (a 10 s window resets at :00, :10 …;
    a day at 00:00 UTC), which is what :attr:`window_ms` describes.
    """

    type: RateLimitType
    interval: str = attrs.field(validator=_interval)
    interval_num: int = attrs.field(validator=attrs.validators.ge(1))
    limit: int = attrs.field(validator=attrs.validators.ge(1))

    @property
    def window_ms(self) -> int:
        """The window's length in milliseconds."""
        return _INTERVAL_S[self.interval] * self.interval_num * 1000

    @property
    def header_suffix(self) -> str:
        """The ``(intervalNum)(intervalLetter)`` of the usage headers: ``1M``, ``10S`` …"""
        return f"{self.interval_num}{_HEADER_LETTER[self.interval]}"

    @property
    def key(self) -> tuple[RateLimitType, int]:
        """Identity of the bucket: its type and window length."""
        return (self.type, self.window_ms)


FALLBACK_RATE_LIMITS: Final = (
    RateLimit(type=RateLimitType.REQUEST_WEIGHT, interval="MINUTE", interval_num=1, limit=1200),
    RateLimit(type=RateLimitType.ORDERS, interval="SECOND", interval_num=10, limit=50),
    RateLimit(type=RateLimitType.ORDERS, interval="DAY", interval_num=1, limit=160_000),
)
"""Used when exchangeInfo cannot be read: lower than today's live limits, so always safe."""


_opt = attrs.field(default=None, validator=optional_non_negative_decimal)


@attrs.frozen(kw_only=True)
class SymbolFilters:
    """The filters Genesis checks before sending an order; ``None`` where the symbol has none.

    Attributes:
        min_price, max_price, tick_size: PRICE_FILTER (0 disables a rule).
        min_qty, max_qty, step_size: LOT_SIZE.
        market_min_qty, market_max_qty, market_step_size: MARKET_LOT_SIZE.
        min_notional, max_notional: NOTIONAL (or the older MIN_NOTIONAL's ``minNotional``).
        apply_min_to_market, apply_max_to_market: whether the notional bounds bind MARKET orders.
        bid_multiplier_up, bid_multiplier_down, ask_multiplier_up, ask_multiplier_down:
            PERCENT_PRICE_BY_SIDE.
        max_num_orders: MAX_NUM_ORDERS (open orders on the symbol).
    """

    min_price: Decimal | None = _opt
    max_price: Decimal | None = _opt
    tick_size: Decimal | None = _opt
    min_qty: Decimal | None = _opt
    max_qty: Decimal | None = _opt
    step_size: Decimal | None = _opt
    market_min_qty: Decimal | None = _opt
    market_max_qty: Decimal | None = _opt
    market_step_size: Decimal | None = _opt
    min_notional: Decimal | None = _opt
    max_notional: Decimal | None = _opt
    apply_min_to_market: bool = True
    apply_max_to_market: bool = False
    bid_multiplier_up: Decimal | None = _opt
    bid_multiplier_down: Decimal | None = _opt
    ask_multiplier_up: Decimal | None = _opt
    ask_multiplier_down: Decimal | None = _opt
    max_num_orders: int | None = None


@attrs.frozen(kw_only=True)
class SymbolInfo:
    """One ``symbols[]`` entry of exchangeInfo, reduced to what trading needs."""

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    base_asset_precision: int
    quote_asset_precision: int
    order_types: frozenset[str]
    filters: SymbolFilters


@attrs.frozen(kw_only=True)
class ExchangeInfo:
    """The decoded exchangeInfo: server time, rate limits and symbols by name."""

    server_time_ms: int
    rate_limits: tuple[RateLimit, ...]
    symbols: dict[str, SymbolInfo] = attrs.field(eq=False)

    def symbol(self, name: str) -> SymbolInfo | None:
        """The rules of ``name``, or ``None`` when the exchange does not list it."""
        return self.symbols.get(name)
