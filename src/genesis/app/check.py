"""``genesis check``: is this configuration ready to run? A verdict in a few seconds.

With settings that loaded (a configuration problem never gets this far: the CLI lists them all
and exits 2), :func:`run_check` reaches the exchange the way ``genesis run`` would and checks, in
order, each step bounded by ``step_timeout_s``:

1. ``rest``: ``GET /api/v3/ping`` answers (else nothing below can work: it stops here);
2. ``clock``: the offset from ``GET /api/v3/time`` samples (a large one is reported: Genesis
   corrects for it, but -1021 rejections follow if the host clock keeps drifting);
3. ``exchangeInfo``: every configured symbol exists (an unknown one is a configuration problem)
   and is ``TRADING`` (a halted one is a failure);
4. ``account`` (only with credentials): the key and signature are accepted;
5. ``stream``: one market-stream frame arrives.

In simulator mode the embedded simulator is started first, as ``genesis run`` does.

Exit code (:attr:`CheckReport.exit_code`): 0 every step passed, 1 the exchange is unreachable or
a step failed, 2 a configuration problem (an unknown symbol).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Final, TextIO

import attrs
import trio

from genesis.app.logging import json_line
from genesis.bus import EventBus
from genesis.config import Mode, Secret
from genesis.errors import ConfigError, ExchangeRejectedError, GenesisError
from genesis.exchange.gateway import open_gateway
from genesis.exchange.signing import HmacSigner, load_signer
from genesis.exchange.ws_manager import run_market_data
from genesis.sim.server import SimConfig, run_simulator

if TYPE_CHECKING:
    from genesis.config import Settings
    from genesis.exchange.gateway import Gateway
    from genesis.exchange.signing import Signer

__all__ = [
    "CLOCK_WARN_MS",
    "STEP_TIMEOUT_S",
    "CheckReport",
    "CheckResult",
    "print_report",
    "run_check",
]

logger = logging.getLogger(__name__)

STEP_TIMEOUT_S: Final = 10.0
CLOCK_WARN_MS: Final = 500.0
BAD_SYMBOL: Final = -1121


@attrs.frozen(kw_only=True)
class CheckResult:
    """One step: ``status`` is ``ok``, ``warn`` (passes, but look), ``fail``, ``config``
    (a configuration problem) or ``skipped``."""

    step: str
    status: str
    detail: str
    unknown: tuple[str, ...] = ()
    """For ``exchangeInfo``: the symbols the exchange does not know."""


@attrs.frozen(kw_only=True)
class CheckReport:
    mode: str
    results: tuple[CheckResult, ...]

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        if "config" in statuses:
            return 2
        if "fail" in statuses:
            return 1
        return 0

    @property
    def verdict(self) -> str:
        return {0: "OK", 1: "FAILING", 2: "CONFIGURATION"}[self.exit_code]


def _error(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"


async def _check_rest(gateway: Gateway, timeout_s: float) -> CheckResult:
    started = trio.current_time()
    try:
        with trio.fail_after(timeout_s):
            await gateway.ping()
    except (GenesisError, trio.TooSlowError) as exc:
        return CheckResult(step="rest", status="fail", detail=f"unreachable: {_error(exc)}")
    rtt_ms = (trio.current_time() - started) * 1000
    base = gateway.statistics().base_url
    return CheckResult(
        step="rest", status="ok", detail=f"ping answered in {rtt_ms:.1f} ms ({base})"
    )


async def _check_clock(gateway: Gateway, timeout_s: float) -> CheckResult:
    try:
        with trio.fail_after(timeout_s):
            stats = await gateway.sync_time()
    except (GenesisError, trio.TooSlowError) as exc:
        return CheckResult(step="clock", status="fail", detail=f"no time sample: {_error(exc)}")
    detail = f"offset {stats.offset_ms:+.1f} ms (uncertainty {stats.uncertainty_ms:.1f} ms)"
    if abs(stats.offset_ms) > CLOCK_WARN_MS:
        return CheckResult(
            step="clock",
            status="warn",
            detail=detail + ": Genesis corrects for it, but fix the host clock (NTP)",
        )
    return CheckResult(step="clock", status="ok", detail=detail)


async def _check_symbols(
    gateway: Gateway, symbols: tuple[str, ...], timeout_s: float
) -> CheckResult:
    unknown: list[str] = []
    not_trading: list[str] = []
    try:
        with trio.fail_after(timeout_s):
            for symbol in symbols:
                try:
                    info = await gateway.exchange_info([symbol])
                except ExchangeRejectedError as exc:
                    if exc.code != BAD_SYMBOL:
                        raise
                    unknown.append(symbol)
                    continue
                found = info.symbol(symbol)
                if found is None:
                    unknown.append(symbol)
                elif found.status != "TRADING":
                    not_trading.append(f"{symbol} is {found.status}")
    except (GenesisError, trio.TooSlowError) as exc:
        return CheckResult(step="exchangeInfo", status="fail", detail=_error(exc))
    if unknown:
        return CheckResult(
            step="exchangeInfo",
            status="config",
            unknown=tuple(unknown),
            detail=f"unknown symbol(s) {', '.join(unknown)}: fix GENESIS_SYMBOLS",
        )
    if not_trading:
        return CheckResult(step="exchangeInfo", status="fail", detail="; ".join(not_trading))
    return CheckResult(
        step="exchangeInfo", status="ok", detail=f"{', '.join(symbols)} exist and are TRADING"
    )


async def _check_account(gateway: Gateway, timeout_s: float) -> CheckResult:
    try:
        with trio.fail_after(timeout_s):
            account = await gateway.account()
    except (GenesisError, trio.TooSlowError) as exc:
        return CheckResult(step="account", status="fail", detail=f"refused: {_error(exc)}")
    return CheckResult(
        step="account",
        status="ok",
        detail=f"credentials accepted (can trade: {'yes' if account.can_trade else 'no'})",
    )


async def _check_stream(stream_url: str, symbols: tuple[str, ...], timeout_s: float) -> CheckResult:
    bus = EventBus()
    started = trio.current_time()
    try:
        with trio.fail_after(timeout_s):
            async with trio.open_nursery() as nursery:
                handle = await nursery.start(partial(run_market_data, stream_url, symbols, bus))
                await handle.wait_published(1)
                nursery.cancel_scope.cancel()
    except trio.TooSlowError as exc:
        return CheckResult(step="stream", status="fail", detail=f"no frame: {_error(exc)}")
    except ExceptionGroup as group:
        # The market-data task gave up with Genesis's own error (e.g. a handshake refused):
        # a result; anything else is a bug and propagates.
        ours, rest = group.split(GenesisError)
        if rest is not None or ours is None:
            raise
        first = ours.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        return CheckResult(step="stream", status="fail", detail=f"no frame: {_error(first)}")
    finally:
        bus.close()
    waited_ms = (trio.current_time() - started) * 1000
    return CheckResult(
        step="stream", status="ok", detail=f"first event after {waited_ms:.0f} ms ({stream_url})"
    )


async def _check_exchange(
    settings: Settings,
    *,
    rest_url: str | None,
    stream_url: str,
    api_key: Secret | None,
    signer: Signer | None,
    signed: bool,
    timeout_s: float,
) -> list[CheckResult]:
    results: list[CheckResult] = []
    async with open_gateway(
        settings, rest_url=rest_url, api_key=api_key, signer=signer, prepare=False
    ) as gateway:
        rest = await _check_rest(gateway, timeout_s)
        results.append(rest)
        if rest.status == "fail":
            skipped = ["clock", "exchangeInfo", *(["account"] if signed else [])]
            results.extend(
                CheckResult(step=s, status="skipped", detail="REST unreachable") for s in skipped
            )
        else:
            results.append(await _check_clock(gateway, timeout_s))
            results.append(await _check_symbols(gateway, settings.symbols, timeout_s))
            if signed:
                results.append(await _check_account(gateway, timeout_s))
    # The stream is checked with the symbols the exchange knows: an unknown one is reported
    # once, above, and would only make every handshake fail.
    unknown = {s for r in results for s in r.unknown}
    known = tuple(s for s in settings.symbols if s not in unknown)
    if known:
        results.append(await _check_stream(stream_url, known, timeout_s))
    else:
        results.append(CheckResult(step="stream", status="skipped", detail="no known symbol"))
    return results


async def run_check(
    settings: Settings, *, sim_seed: int = 1, step_timeout_s: float = STEP_TIMEOUT_S
) -> CheckReport:
    """Check ``settings`` against the exchange (or the embedded simulator). Never raises for
    the exchange's trouble: every failure is a result.

    Raises:
        ConfigError: the simulator cannot trade the configured symbols (simulator mode).
    """
    mode = settings.mode.value
    config = CheckResult(
        step="configuration",
        status="ok",
        detail=f"{mode} mode; symbols {','.join(settings.symbols)}",
    )
    sim_config: SimConfig | None = None
    if settings.mode is Mode.SIMULATOR:
        try:
            sim_config = SimConfig(symbols=settings.symbols, seed=sim_seed)
        except ValueError as exc:
            raise ConfigError([f"GENESIS_SYMBOLS: the simulator cannot trade them: {exc}"]) from exc
    elif settings.stream_url is None:
        raise ConfigError([f"{mode} mode needs a stream URL"])
    api_key: Secret | None = settings.api_key
    signer: Signer | None = None if sim_config is not None else load_signer(settings)
    rest_url: str | None = settings.rest_url
    stream_url = settings.stream_url or ""
    async with trio.open_nursery() as nursery:
        if sim_config is not None:
            sim = await nursery.start(run_simulator, sim_config)
            api_key, signer = Secret(sim.api_key), HmacSigner(Secret(sim.api_secret))
            rest_url, stream_url = sim.rest_url, sim.stream_url
        results = await _check_exchange(
            settings,
            rest_url=rest_url,
            stream_url=stream_url,
            api_key=api_key,
            signer=signer,
            signed=api_key is not None and signer is not None,
            timeout_s=step_timeout_s,
        )
        nursery.cancel_scope.cancel()
    report = CheckReport(mode=mode, results=(config, *results))
    logger.info("check.done verdict=%s exit_code=%d", report.verdict, report.exit_code)
    return report


def print_report(report: CheckReport, out: TextIO, *, json: bool = False) -> None:
    """Write ``report`` to ``out``: aligned text, or one JSON object per line."""
    if json:
        lines = [
            json_line(
                "check.result",
                {"step": r.step, "status": r.status, "detail": r.detail},
                level="INFO" if r.status in ("ok", "skipped") else "WARNING",
                logger=__name__,
                message=f"check.result step={r.step} status={r.status}",
            )
            for r in report.results
        ]
        lines.append(
            json_line(
                "check.verdict",
                {"verdict": report.verdict, "exit_code": report.exit_code, "mode": report.mode},
                level="INFO" if report.exit_code == 0 else "ERROR",
                logger=__name__,
                message=f"check.verdict verdict={report.verdict}",
            )
        )
    else:
        width = max(len(r.step) for r in report.results)
        lines = [f"genesis check ({report.mode} mode)"]
        lines.extend(
            f"  {r.status.upper():<7} {r.step:<{width}}  {r.detail}" for r in report.results
        )
        lines.append(f"verdict: {report.verdict} (exit {report.exit_code})")
    out.write("\n".join(lines) + "\n")
    out.flush()
