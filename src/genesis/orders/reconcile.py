"""Reconciliation: the journal's orders checked against the exchange after a start or a gap.

The original specification's "always validate state after restart". After a start, and after
every gap in the user data stream (an execution report may have been lost), the exchange is asked
what it has, and the differences are applied to the journal (then published), one cycle at a
time::

    reconcile_once(service, symbols=...)
    ├── journal.unfinished()          PENDING, PARTIAL, UNKNOWN: oldest first
    ├── GET openOrders                one call per symbol (weight 6) of ``symbols`` ∪ the
    │                                 unfinished orders' symbols (one weight-80 call for all
    │                                 symbols when that is cheaper); each open order → recorded
    │                                 (an order the journal never saw → recorded *external*)
    └── each unfinished order not open (it filled, was cancelled, expired, or never existed)
        ├── never claimed for sending → REJECTED "never sent", without a query
        ├── sent, never acknowledged, recvWindow not yet over → still unknown (next cycle)
        └── GET order by client id    at most ``max_queries_per_cycle``, ``query_spacing_s``
                                      apart: found → recorded; -2013 → REJECTED "never existed"

Every call goes through the gateway, so the rate limiter and the breaker apply; the spacing and
the per-cycle cap keep a large journal from turning one reconciliation into a burst (a naive
per-order sweep is how users got IP-banned). Reconciliation never sends an order.

How the facts are read:

- An intent that was never claimed (``sent_at_ms`` is ``None``) never left: the journal claims an
  intent before the request goes out (:meth:`~genesis.orders.journal.Journal.record_sent`), so it
  is ``REJECTED`` without asking the exchange. It is left alone until ``recvWindow`` +
  :data:`~genesis.orders.service.RESOLVE_MARGIN_MS` after its intent: a placement in this very
  process claims its intent a few statements after writing it, and must not be overtaken.
- A sent order the exchange never acknowledged (no status, no order id from it) is asked for only
  once ``sent_at_ms + recvWindow + RESOLVE_MARGIN_MS`` has passed on the exchange's clock: from
  then on the exchange refuses the request if it arrives, so -2013 means it never existed
  (ARCHITECTURE.md "Unknown outcomes").
- An order the exchange has acknowledged (or an external one) is asked for at once; a -2013 for
  it is *not* "never existed" (Binance archives old cancelled orders without fills): an error.
- Each order is read again from the journal right before it is concluded: the user stream or the
  order service may have moved it on meanwhile. An open order whose view equals the journal's is
  not recorded again (no journal event, no bus event).

:func:`run_reconciler` is the long-lived service: a cycle at start, one more after every gap
(``trigger``), rechecks while something is still unknown, and a failed cycle retried with backoff
— never fatal: exchange trouble must not take market data down with it.

Logs: ``reconcile.start``, ``reconcile.done``, ``reconcile.changed``, ``reconcile.never_sent``,
``reconcile.never_existed``, ``reconcile.order_error``, ``reconcile.symbol_error``,
``reconcile.disagrees``, ``reconcile.failed``, ``reconcile.incomplete``,
``reconcile.trigger_closed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, NoReturn, TypeAlias

import attrs
import trio

from genesis.errors import ExchangeRejectedError, GenesisError, RetryableError
from genesis.exchange.endpoints import open_orders_weight
from genesis.models.events import OrderUpdateSource
from genesis.models.orders import Order, OrderStatus
from genesis.orders.service import NO_SUCH_ORDER, RESOLVE_MARGIN_MS
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from decimal import Decimal

    from genesis.models.orders import OrderRequest
    from genesis.orders.journal import JournalEntry
    from genesis.orders.service import OrderService

__all__ = [
    "ReconcileConfig",
    "ReconcileReport",
    "ReconcilerHandle",
    "ReconcilerStatistics",
    "reconcile_once",
    "reconcile_trigger",
    "run_reconciler",
]

logger = logging.getLogger(__name__)

_View: TypeAlias = "tuple[OrderStatus, str | None, Decimal, int | None]"
"""What reconciliation compares: status, Binance's status, filled quantity, Binance's order id."""
_ONE_SYMBOL_WEIGHT = open_orders_weight(with_symbol=True)
_ALL_SYMBOLS_WEIGHT = open_orders_weight(with_symbol=False)


@attrs.frozen(kw_only=True)
class ReconcileConfig:
    """How hard a reconciliation may press the exchange, and how it retries.

    Attributes:
        max_queries_per_cycle: ``GET /api/v3/order`` calls in one cycle at most (as Nautilus's
            ``max_single_order_queries_per_cycle``); the rest wait for the next cycle.
        query_spacing_s: the pause between two such calls.
        recheck_s: how soon :func:`run_reconciler` runs again while orders are still unknown.
        backoff: the retry schedule of failed cycles (1, 2, 4 … 30 s).
    """

    max_queries_per_cycle: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    query_spacing_s: float = attrs.field(default=0.1, validator=attrs.validators.ge(0.0))
    recheck_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0.0))
    backoff: BackoffPolicy = attrs.field(factory=BackoffPolicy)


@attrs.frozen(kw_only=True)
class ReconcileReport:
    """What one reconciliation found and changed; the lists hold client order ids.

    Attributes:
        symbols: the symbols looked at: those given and those of unfinished orders (with one
            all-symbols call when that is cheaper, open orders of any symbol are counted).
        open_on_exchange: how many open orders the exchange listed.
        checked: journal orders asked for one by one (``GET /api/v3/order``).
        changed: journal orders whose state the exchange's answer moved on.
        external: orders found on the exchange that the journal never saw (now journaled).
        never_sent: intents that never left the process: now ``REJECTED``.
        never_existed: sent orders the exchange answered -2013 for after recvWindow: ``REJECTED``.
        still_unknown: orders not settled in this cycle (recvWindow not over, the query cap
            reached, or a query refused); a later cycle tries again.
        errors: what the exchange refused, one line each (``<id or symbol>: <error>``), and
            orders the journal has as terminal that the exchange lists as open.
    """

    symbols: tuple[str, ...]
    open_on_exchange: int
    checked: int
    changed: tuple[str, ...]
    external: tuple[str, ...]
    never_sent: tuple[str, ...]
    never_existed: tuple[str, ...]
    still_unknown: tuple[str, ...]
    errors: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ReconcilerStatistics:
    """The state of a :func:`run_reconciler` service.

    Attributes:
        cycles: reconciliations that completed (with or without per-order errors).
        failures: attempts that failed as a whole (the exchange unreachable, a call refused).
        consecutive_failures: failures since the last completed cycle.
        last_report: the last completed cycle's report.
        last_error: the last failure, ``"<ErrorType>: <message>"``.
        last_success_at: Trio time at which the last completed cycle ended.
    """

    cycles: int
    failures: int
    consecutive_failures: int
    last_report: ReconcileReport | None
    last_error: str | None
    last_success_at: float | None


@attrs.define
class _Tally:
    checked: int = 0
    open_on_exchange: int = 0
    changed: list[str] = attrs.field(factory=list)
    external: list[str] = attrs.field(factory=list)
    never_sent: list[str] = attrs.field(factory=list)
    never_existed: list[str] = attrs.field(factory=list)
    still_unknown: list[str] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)

    def report(self, symbols: tuple[str, ...]) -> ReconcileReport:
        return ReconcileReport(
            symbols=symbols,
            open_on_exchange=self.open_on_exchange,
            checked=self.checked,
            changed=tuple(self.changed),
            external=tuple(self.external),
            never_sent=tuple(self.never_sent),
            never_existed=tuple(self.never_existed),
            still_unknown=tuple(self.still_unknown),
            errors=tuple(self.errors),
        )


def _entry_view(entry: JournalEntry) -> _View:
    return entry.status, entry.exchange_status, entry.filled_quantity, entry.exchange_order_id


def _order_view(order: Order) -> _View:
    return order.status, order.exchange_status, order.filled_quantity, order.exchange_order_id


def _unacknowledged(entry: JournalEntry) -> OrderRequest | None:
    """The request of an order the exchange never acknowledged; ``None`` if it did (or external)."""
    if entry.exchange_status is not None or entry.exchange_order_id is not None:
        return None
    return entry.request  # None for an external order: the exchange told us of it


def _describe(exc: GenesisError) -> str:
    return f"{type(exc).__name__}: {exc}"


async def reconcile_once(
    service: OrderService,
    *,
    symbols: Sequence[str],
    config: ReconcileConfig = ReconcileConfig(),  # frozen: one shared default is safe
) -> ReconcileReport:
    """Check the journal against the exchange once and apply what differs (module docstring).

    Every change is journaled, then published, through ``service.recorder``. Nothing is ever
    sent but queries. Cancellation may leave a cycle half done; what was recorded stays recorded
    (each record is one journal transaction) and the next cycle completes the rest.

    Args:
        service: the order service whose journal, gateway and recorder are used; its gateway
            must list open orders (:class:`~genesis.exchange.gateway.Gateway` does).
        symbols: symbols to look for open orders in besides the unfinished orders' own (the
            configured symbols: external orders are found there).
        config: the query cap, the spacing and the retry schedule.

    Returns:
        What was found and changed.

    Raises:
        GenesisError: an exchange-wide failure (the exchange unreachable or unavailable, rate
            limited, banned, the breaker open, credentials refused) or a journal failure: the
            cycle is incomplete, retry it later. A refusal that concerns one order or one
            symbol is reported in ``errors`` instead.
    """
    gateway = service.gateway
    journal = service.journal
    started = trio.current_time()
    unfinished = await journal.unfinished()
    wanted = tuple(dict.fromkeys([*symbols, *(entry.symbol for entry in unfinished)]))
    tally = _Tally()

    # 1. What is open on the exchange.
    open_ids: set[str] = set()
    # Many symbols: one all-symbols call (weight 80) costs less than one call each (6 each).
    one_call = len(wanted) * _ONE_SYMBOL_WEIGHT > _ALL_SYMBOLS_WEIGHT
    batches: tuple[str | None, ...] = (None,) if one_call else wanted
    for symbol in batches:
        try:
            listed = await gateway.open_orders(symbol)
        except ExchangeRejectedError as exc:
            if isinstance(exc, RetryableError) or symbol is None:
                raise
            # One symbol refused (delisted, say): its orders are asked for one by one below.
            logger.warning("reconcile.symbol_error symbol=%s error=%s", symbol, _describe(exc))
            tally.errors.append(f"{symbol}: {_describe(exc)}")
            continue
        tally.open_on_exchange += len(listed)
        for order in listed:
            open_ids.add(order.client_order_id)
            await _adopt(service, order, await journal.get(order.client_order_id), tally)

    # 2. Unfinished journal orders the exchange does not list as open.
    queries = 0
    for candidate in unfinished:
        cid = candidate.client_order_id
        if cid in open_ids:
            continue
        entry = await journal.get(cid)  # fresh: the stream or the service may have settled it
        if entry is None or entry.status.is_terminal:
            continue
        now_ms = service.gateway.server_time_ms()
        ready_ms = service.gateway.recv_window_ms + RESOLVE_MARGIN_MS
        request = _unacknowledged(entry)
        if request is not None:
            if entry.sent_at_ms is None:
                if now_ms < entry.created_ms + ready_ms:
                    tally.still_unknown.append(cid)  # a placement of ours may be claiming it
                    continue
                logger.warning(
                    "reconcile.never_sent client_order_id=%s symbol=%s: the intent never left;"
                    " REJECTED",
                    cid,
                    entry.symbol,
                )
                reason = "never sent (found by reconciliation)"
                await _reject(service, request, cid, now_ms, reason)
                tally.never_sent.append(cid)
                continue
            if now_ms < entry.sent_at_ms + ready_ms:
                tally.still_unknown.append(cid)  # it could still arrive: ask after recvWindow
                continue
        if queries >= config.max_queries_per_cycle:
            tally.still_unknown.append(cid)
            continue
        if queries:
            await trio.sleep(config.query_spacing_s)
        queries += 1
        tally.checked += 1
        try:
            found = await service.gateway.get_order(entry.symbol, client_order_id=cid)
        except ExchangeRejectedError as exc:
            if isinstance(exc, RetryableError):
                raise
            if exc.code == NO_SUCH_ORDER and request is not None:
                logger.warning(
                    "reconcile.never_existed client_order_id=%s symbol=%s: -2013 after"
                    " recvWindow; REJECTED",
                    cid,
                    entry.symbol,
                )
                reason = "never reached the exchange (-2013 after recvWindow, reconciliation)"
                await _reject(service, request, cid, service.gateway.server_time_ms(), reason)
                tally.never_existed.append(cid)
                continue
            logger.warning(
                "reconcile.order_error client_order_id=%s symbol=%s error=%s",
                cid,
                entry.symbol,
                _describe(exc),
            )
            tally.errors.append(f"{cid}: {_describe(exc)}")
            tally.still_unknown.append(cid)
            continue
        await _adopt(service, found, entry, tally)

    report = tally.report(wanted)
    logger.info(
        "reconcile.done symbols=%d open=%d checked=%d changed=%d external=%d never_sent=%d"
        " never_existed=%d still_unknown=%d errors=%d duration_s=%.3f",
        len(wanted),
        report.open_on_exchange,
        report.checked,
        len(report.changed),
        len(report.external),
        len(report.never_sent),
        len(report.never_existed),
        len(report.still_unknown),
        len(report.errors),
        trio.current_time() - started,
    )
    return report


async def _adopt(
    service: OrderService, order: Order, before: JournalEntry | None, tally: _Tally
) -> None:
    """Record the exchange's view of ``order`` unless the journal has exactly it already."""
    if before is not None and _entry_view(before) == _order_view(order):
        return
    await service.recorder.record(order, OrderUpdateSource.RECONCILE, reason="reconciled")
    cid = order.client_order_id
    if before is None:
        tally.external.append(cid)  # the recorder logged and journaled it as external
        return
    after = await service.journal.get(cid)
    assert after is not None  # journal rows are never deleted
    if before.status.is_terminal and not order.status.is_terminal:
        # The journal concluded it (a local rejection), yet the exchange lists it as open: a
        # person must look. The journal keeps its terminal state (a stage never goes back).
        logger.warning(
            "reconcile.disagrees client_order_id=%s symbol=%s journal=%s exchange=%s",
            cid,
            order.symbol,
            before.status.value,
            order.exchange_status,
        )
        tally.errors.append(
            f"{cid}: the journal has it {before.status.value}, the exchange lists it"
            f" {order.exchange_status}"
        )
    elif _entry_view(after) != _entry_view(before):
        logger.info(
            "reconcile.changed client_order_id=%s symbol=%s status=%s->%s exchange_status=%s",
            cid,
            order.symbol,
            before.status.value,
            after.status.value,
            after.exchange_status,
        )
        tally.changed.append(cid)
    # Otherwise the report was older than what the journal has (a later user-stream fill).


async def _reject(
    service: OrderService, request: OrderRequest, cid: str, now_ms: int, reason: str
) -> None:
    rejected = Order.from_request(
        request, client_order_id=cid, status=OrderStatus.REJECTED, created_ms=now_ms
    )
    await service.recorder.record(rejected, OrderUpdateSource.RECONCILE, reason=reason)


# --- the service --------------------------------------------------------------------------


@attrs.define
class _ReconcilerState:
    cycles: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_report: ReconcileReport | None = None
    last_error: str | None = None
    last_success_at: float | None = None


@attrs.frozen
class ReconcilerHandle:
    """What :func:`run_reconciler` hands its starter: a view of its state.

    A run started with ``resume=handle`` continues this state, so one handle reads every run.
    """

    _state: _ReconcilerState

    def statistics(self) -> ReconcilerStatistics:
        s = self._state
        return ReconcilerStatistics(
            cycles=s.cycles,
            failures=s.failures,
            consecutive_failures=s.consecutive_failures,
            last_report=s.last_report,
            last_error=s.last_error,
            last_success_at=s.last_success_at,
        )


def reconcile_trigger() -> tuple[Callable[[], Awaitable[None]], trio.MemoryReceiveChannel[None]]:
    """A user-stream gap hook and the trigger channel it feeds, for :func:`run_reconciler`.

    ``on_gap, recv_chan = reconcile_trigger()``; pass ``on_gap`` as the user stream's
    ``on_gap`` and ``recv_chan`` as the reconciler's ``trigger``. ``on_gap`` never blocks: the
    channel holds one pending trigger (a bounded buffer of 1) and a gap that finds one pending is
    dropped. That is safe because a cycle reads the exchange's state as it is when it runs, and
    the pending trigger's cycle has not started yet: it covers every gap before it.

    ``on_gap`` returns before the reconciliation has run (the user stream reports SUBSCRIBED
    meanwhile); reports that arrive during the cycle are harmless, since the journal keeps the
    most advanced state whichever way it arrives. It raises ``trio.BrokenResourceError`` once
    the reconciler has closed its end (the tree is then going down).
    """
    send_chan, recv_chan = trio.open_memory_channel[None](1)

    async def on_gap() -> None:
        await trio.lowlevel.checkpoint()
        with contextlib.suppress(trio.WouldBlock):  # a pending cycle covers this gap too
            send_chan.send_nowait(None)

    return on_gap, recv_chan


async def run_reconciler(
    service: OrderService,
    *,
    symbols: Sequence[str],
    trigger: trio.MemoryReceiveChannel[None] | None = None,
    config: ReconcileConfig = ReconcileConfig(),  # frozen: one shared default is safe
    resume: ReconcilerHandle | None = None,
    task_status: trio.TaskStatus[ReconcilerHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Reconcile at start, after every trigger, and again while orders are still unknown.

    ``handle = await nursery.start(run_reconciler, service, symbols=...)`` returns once the first
    attempt has settled, successful or not, so a broken exchange does not hold the tree up.

    - Each item on ``trigger`` asks for a cycle (see :func:`reconcile_trigger`). Triggers that
      queue up before a cycle starts are taken together: that cycle covers them all. A trigger
      that arrives during a cycle makes exactly one more. Once the channel ends, cycles run
      only on the timers below.
    - While a report has ``still_unknown`` orders, another cycle follows ``recheck_s`` later
      (or at the next trigger); a report with ``errors`` waits on the backoff schedule instead.
    - A failed cycle (any :class:`~genesis.errors.GenesisError`: the exchange unreachable, a call
      refused, the journal failing) is a WARNING ``reconcile.failed ... retry_in_s=`` and is
      retried after the backoff (1, 2, 4 … 30 s); triggers do not cut a backoff short. Nothing
      the exchange does makes this raise.

    - ``resume``: the handle of an earlier run that ended (a crash; the supervisor in
      :mod:`genesis.app.supervisor` restarts it): this run continues it and hands out that same
      handle, so whoever holds it reads this run. Its figures go on from where they were
      (``cycles``, ``failures``, ``last_report``, ``last_error`` …; a crash mid-cycle is not
      counted as a failure), and the retry schedule starts afresh. Like any start, it reconciles
      at once, which also covers triggers sent while it was down (they wait in ``trigger``).

    Runs until cancelled; cancellation may stop a cycle half-way (see :func:`reconcile_once`).
    It closes nothing it was given: the trigger channel's owner closes it, so the channel
    outlives a crash and a restart.
    """
    symbols = tuple(symbols)
    handle = ReconcilerHandle(_ReconcilerState()) if resume is None else resume
    state = handle._state
    backoff = Backoff(config.backoff)
    logger.info(
        "reconcile.start symbols=%s trigger=%s resumed=%s",
        ",".join(symbols),
        trigger is not None,
        resume is not None,
    )
    started = False
    while True:
        trigger = _drain(trigger)  # this cycle covers every trigger queued before it
        wait_s, failed = await _cycle(service, symbols, config, state, backoff)
        if not started:
            started = True
            task_status.started(handle)
        if failed:
            await trio.sleep(wait_s)  # a gap does not cut a backoff short: it is retried anyway
        else:
            trigger = await _wait_for_trigger(trigger, wait_s)


async def _cycle(
    service: OrderService,
    symbols: tuple[str, ...],
    config: ReconcileConfig,
    state: _ReconcilerState,
    backoff: Backoff,
) -> tuple[float, bool]:
    """One attempt, accounted in ``state``; how long to wait after it, and whether it failed."""
    try:
        report = await reconcile_once(service, symbols=symbols, config=config)
    except GenesisError as exc:
        state.failures += 1
        state.consecutive_failures += 1
        state.last_error = _describe(exc)
        delay_s = backoff.mark_failed(trio.current_time())
        logger.warning(
            "reconcile.failed attempt=%d error=%s retry_in_s=%g",
            state.consecutive_failures,
            state.last_error,
            delay_s,
        )
        return delay_s, True
    state.cycles += 1
    state.consecutive_failures = 0
    state.last_report = report
    state.last_success_at = trio.current_time()
    if report.errors:
        delay_s = backoff.mark_failed(trio.current_time())
        logger.warning(
            "reconcile.incomplete errors=%d first=%s retry_in_s=%g",
            len(report.errors),
            report.errors[0],
            delay_s,
        )
        return delay_s, False
    backoff.reset()
    return (config.recheck_s if report.still_unknown else math.inf), False


def _drain(
    recv_chan: trio.MemoryReceiveChannel[None] | None,
) -> trio.MemoryReceiveChannel[None] | None:
    """Take every pending trigger; the channel, or ``None`` once it has ended."""
    if recv_chan is None:
        return None
    while True:
        try:
            recv_chan.receive_nowait()
        except trio.WouldBlock:
            return recv_chan
        except trio.EndOfChannel:
            logger.info("reconcile.trigger_closed: reconciling on timers only")
            return None


async def _wait_for_trigger(
    recv_chan: trio.MemoryReceiveChannel[None] | None, timeout_s: float
) -> trio.MemoryReceiveChannel[None] | None:
    """Wait for a trigger or ``timeout_s``; the channel, or ``None`` once it has ended."""
    with trio.move_on_after(timeout_s):
        if recv_chan is None:
            await trio.sleep_forever()
        try:
            await recv_chan.receive()
        except trio.EndOfChannel:
            logger.info("reconcile.trigger_closed: reconciling on timers only")
            return None
    return recv_chan
