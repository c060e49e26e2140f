"""The account as the exchange reports it: balances and own trades."""

from __future__ import annotations

from decimal import Decimal

import attrs

__all__ = ["Account", "AccountTrade", "Balance"]


@attrs.frozen(kw_only=True)
class Balance:
    """One asset's ``free`` and ``locked`` amounts."""

    asset: str
    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@attrs.frozen(kw_only=True)
class Account:
    """``GET /api/v3/account``: permissions and balances (by asset)."""

    can_trade: bool
    can_withdraw: bool
    can_deposit: bool
    account_type: str
    update_time_ms: int
    balances: dict[str, Balance] = attrs.field(eq=False)

    def balance(self, asset: str) -> Balance:
        """The balance of ``asset``; zero when the account holds none."""
        return self.balances.get(asset) or Balance(asset=asset, free=Decimal(0), locked=Decimal(0))


@attrs.frozen(kw_only=True)
class AccountTrade:
    """One of the account's own trades (``GET /api/v3/myTrades``)."""

    symbol: str
    trade_id: int
    order_id: int
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool
