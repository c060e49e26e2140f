"""Genesis: exchange connectivity for Binance Spot on Trio, with an embedded simulator."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
