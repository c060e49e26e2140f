"""The user data stream: our orders and balances as the exchange reports them, over the WS API.

:func:`run_user_stream` keeps one WebSocket API connection (``BINANCE_WS_API_URL``, by default
the environment's ``wss://ws-api.binance.com:443/ws-api/v3``) with one user data subscription
(``shared/binance/FACTS.md`` §10; listenKeys are gone)::

    connect (breaker guard, connect_timeout_s)
      ├─ HMAC key:    userDataStream.subscribe.signature {apiKey, timestamp, recvWindow, signature}
      └─ Ed25519 key: session.logon {apiKey, timestamp, recvWindow, signature}
                      userDataStream.subscribe
    on_gap()          after a subscription that follows a gap (the reconciler's hook);
                      only then is the stream SUBSCRIBED (available)
    relay             executionReport          → OrderUpdate(source=USER_STREAM) ─┐ await publish:
                      outboundAccountPosition  → AccountBalances                   ─┘ never dropped
    eventStreamTerminated  → resubscribe on the same connection, then on_gap()
    serverShutdown, 23.5 h → reconnect at once (planned), then on_gap()
    failure                → WARNING, backoff 1, 2, 4 … 30 s (jittered as ws_manager), reconnect,
                             then on_gap()

Rules:

- One task reads the connection. A request (logon, subscribe, the keepalive ``ping``) is sent
  and then frames are read until the answer with its id arrives; events that arrive meanwhile
  are relayed in order. Ids are integers counting up from 1 for the service's life, so an
  answer is never mistaken for another; an answer nobody waits for is counted and ignored.
- An answer with an error rejects the attempt: ``-1022`` (bad signature), ``-2015`` (bad key,
  IP or permissions), ``-1021`` (timestamp outside ``recvWindow``) … are a WARNING, counted, and
  retried after the backoff; a 429/418 waits at least until its ``retryAfter``. An error answer
  with id ``null`` (a revoked session) ends the connection the same way.
- Publishing is awaited (``bus.publish`` applies backpressure to never-drop events); reading
  pauses meanwhile. trio-websocket keeps answering pings while its ``message_queue_size`` queue
  has room, so a slow bus only ends the connection (then a gap and a reconciliation) after that
  many unread frames.
- Liveness: after ``keepalive_after_s`` without a frame a WS API ``ping`` request (weight 1)
  must be answered within ``request_timeout_s``; otherwise the connection is dead (a half-open
  TCP connection shows nothing else) and is replaced.
- A malformed frame (bad JSON, an undecodable event) is a WARNING and counted, never fatal. It
  may have been an order update, so it opens a gap: ``on_gap`` runs ``malformed_gap_delay_s``
  later (a burst reconciles once; a stream of bad frames at most once per delay).
- Every end of a subscription (a failure, a planned reconnect, ``eventStreamTerminated``) opens
  a gap; the next subscription closes it by awaiting ``on_gap``. An
  :class:`~genesis.errors.ExchangeError` raised by ``on_gap`` ends the connection like an
  exchange failure (so reconciliation is retried after the backoff); other errors propagate.
- Cancellation ends the subscription politely: ``userDataStream.unsubscribe`` and the close
  frame go out under a bounded shield (:data:`~genesis.exchange.ws_manager.CLOSE_ON_CANCEL_S`).

Start-up (a deliberate choice): ``task_status.started(handle)`` is called once the *first
attempt* has settled: subscribed (the handle reports ``SUBSCRIBED``), or failed (``BACKOFF``,
after its WARNING). Waiting for a subscription that may never come would hold up ``genesis run``
forever, and the issue says a user stream that cannot connect must never stop it; calling it
before any attempt would let the order task place orders before anyone listens, without a gap
being recorded. Settling is bounded by ``connect_timeout_s`` plus one ``request_timeout_s`` per
request (two for Ed25519). When it failed, every later subscription is treated as following a
gap (``on_gap`` runs), and :meth:`UserStreamHandle.wait_subscribed` waits for the stream.

Restart (``resume=``): a bug that escapes ends the service; the order-side supervisor
(:mod:`genesis.app.supervisor`) starts it again with the old handle, which the new run takes
over with its counters. Its first subscription follows a gap, so the downtime is reconciled.

Availability changes are published as :class:`~genesis.models.events.UserStreamStatus` events
(subscribed; lost or never reached): while unavailable, order outcomes come from REST queries.

Logs use stable names: ``user_stream.start``, ``user_stream.connect``, ``user_stream.connected``,
``user_stream.subscribed``, ``user_stream.connect_failed`` / ``user_stream.subscribe_failed`` /
``user_stream.disconnect`` (WARNING when unplanned), ``user_stream.reconnect``,
``user_stream.rotate``, ``user_stream.terminated``, ``user_stream.gap``, ``user_stream.malformed``,
``user_stream.unexpected_answer``. Keys, signatures and frames are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TypeAlias, runtime_checkable

import attrs
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from genesis.errors import (
    CircuitOpenError,
    ConnectError,
    ConnectionLostError,
    ExchangeError,
    ExchangeProtocolError,
    IpBannedError,
    RateLimitedError,
    ReadTimeoutError,
)
from genesis.exchange.user_stream_wire import Connection, WsApiWire

# The connector seam and the connection-error helpers are ws_manager's (one copy of each).
from genesis.exchange.ws_errors import (
    describe_error,
    first_leaf,
    translate_connect_error,
)
from genesis.exchange.ws_manager import (
    CLOSE_ON_CANCEL_S,
    WebSocket,
    WebSocketConnector,
    connect_tcp_websocket,
    system_wall_clock_ms,
)
from genesis.models.codec import (
    WsApiResponse,
    decode_subscription_id,
    decode_ws_api_frame,
)
from genesis.models.events import (
    AccountBalances,
    ExecutionReport,
    OrderUpdate,
    ServerShutdown,
    StreamTerminated,
    UserStreamState,
    UserStreamStatus,
)
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    import random

    from genesis.config import Secret
    from genesis.exchange.signing import Signer
    from genesis.exchange.ws_manager import WallClock
    from genesis.resilience.circuit_breaker import CircuitBreaker

__all__ = [
    "ED25519_KEY_TYPE",
    "GapHook",
    "UserEventSink",
    "UserStreamConfig",
    "UserStreamEvent",
    "UserStreamHandle",
    "UserStreamStatistics",
    "WsApiWebSocket",
    "run_user_stream",
]

logger = logging.getLogger(__name__)

ED25519_KEY_TYPE: Final = "ED25519"
"""The signer key type that logs on (``session.logon``); every other type signs the subscribe."""

_LOGON: Final = "session.logon"
_SUBSCRIBE: Final = "userDataStream.subscribe"
_SUBSCRIBE_SIGNED: Final = "userDataStream.subscribe.signature"
_UNSUBSCRIBE: Final = "userDataStream.unsubscribe"
_PING: Final = "ping"


@attrs.frozen(kw_only=True)
class UserStreamConfig:
    """Protocol deadlines and sizes of the user data stream (one frozen object).

    Attributes:
        connect_timeout_s: TCP + TLS + WebSocket handshake deadline.
        request_timeout_s: Deadline for the answer to each request (logon, subscribe, ping).
        keepalive_after_s: No frame for this long → a ``ping`` request, which must be answered
            within ``request_timeout_s`` or the connection is replaced.
        rotate_after_s: Connection age at which it is replaced (planned), before Binance's 24 h
            cut.
        disconnect_timeout_s: Bound on the unsubscribe and close handshake.
        message_queue_size: trio-websocket's unread-frame queue; pings are answered while it has
            room, so it bounds how long a slow publish may pause reading.
        recv_window_ms: ``recvWindow`` of the signed logon/subscribe (Binance: at most 60000).
        malformed_gap_delay_s: A malformed frame opens a gap that is closed (``on_gap``) this
            long after it, and never sooner than this after the previous gap was closed: a
            burst of bad frames reconciles once, a stream of them at most once per delay.
        backoff: Reconnect schedule (1, 2, 4 … 30 s by default).
    """

    connect_timeout_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    request_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    keepalive_after_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    rotate_after_s: float = attrs.field(default=23.5 * 3600, validator=attrs.validators.gt(0))
    disconnect_timeout_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    message_queue_size: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    recv_window_ms: int = attrs.field(
        default=5000, validator=[attrs.validators.ge(1), attrs.validators.le(60_000)]
    )
    malformed_gap_delay_s: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    backoff: BackoffPolicy = attrs.field(factory=BackoffPolicy)


@runtime_checkable
class WsApiWebSocket(WebSocket, Protocol):
    """A :class:`~genesis.exchange.ws_manager.WebSocket` that can also send (requests).

    The connector returns :class:`~genesis.exchange.ws_manager.WebSocket`; the user stream
    checks at connect time that what it got can send too (trio-websocket's connections can).
    """

    async def send_message(self, message: str | bytes) -> None:
        """Send one message; raises ``trio_websocket.ConnectionClosed`` once closed."""
        ...


UserStreamEvent: TypeAlias = OrderUpdate | AccountBalances | UserStreamStatus
"""What the user data stream publishes."""


class UserEventSink(Protocol):
    """Where user stream events go, awaited per event (e.g. ``EventBus.publish``)."""

    async def __call__(self, event: UserStreamEvent) -> None: ...


GapHook: TypeAlias = Callable[[], Awaitable[None]]
"""Awaited after each subscription that follows a gap (reconcile orders over REST)."""


@attrs.frozen(kw_only=True)
class UserStreamStatistics:
    """A snapshot of the user data stream.

    Attributes:
        state: Connecting, subscribing (connected), subscribed, or waiting in backoff.
        connected: A connection is open.
        subscribed: A subscription is live.
        subscription_id: The live subscription's id.
        uptime_s: Seconds since the live subscription started (0 when there is none).
        connects: Connections opened.
        subscriptions: Subscriptions made (first ones, after reconnects and resubscriptions).
        reconnects: Reconnects after failures (not counting planned ones).
        rotations: Planned reconnects (``serverShutdown``, connection age).
        resubscriptions: Subscriptions renewed on the same connection after
            ``eventStreamTerminated``.
        rejections: Error answers to our requests (rejected logon or subscribe, revoked session).
        gaps: Gaps closed by calling ``on_gap`` (or that would have been, without a hook).
        events: Events received by wire type (``executionReport``, ``outboundAccountPosition``,
            ``eventStreamTerminated``, ``serverShutdown``, and types Genesis ignores).
        malformed: Frames that did not decode.
        unexpected_answers: Answers to no request in flight.
        last_error: Why the last connection or attempt ended, if one failed.
        last_event_ms: Event time ``E`` of the last order or balance event.
    """

    state: UserStreamState
    connected: bool
    subscribed: bool
    subscription_id: int | None
    uptime_s: float
    connects: int
    subscriptions: int
    reconnects: int
    rotations: int
    resubscriptions: int
    rejections: int
    gaps: int
    events: dict[str, int] = attrs.field(eq=False)
    malformed: int
    unexpected_answers: int
    last_error: str | None
    last_event_ms: int | None


@attrs.define(eq=False)
class _Service:
    """Everything one :func:`run_user_stream` call owns; read through the handle."""

    url: str
    wire: WsApiWire
    publish: UserEventSink
    on_gap: GapHook | None
    breaker: CircuitBreaker | None
    config: UserStreamConfig
    connector: WebSocketConnector
    backoff: Backoff
    state: UserStreamState = UserStreamState.CONNECTING
    conn: Connection | None = None
    settled: trio.Event = attrs.field(factory=trio.Event)
    changed: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    gap_pending: bool = False
    gap_due_at: float = math.inf
    """When a gap opened by a malformed frame is closed (a lost subscription's: at once)."""
    last_gap_at: float = -math.inf
    available: bool | None = None
    retry_after_s: float = 0.0
    attempts: int = 0
    connects: int = 0
    subscriptions: int = 0
    reconnects: int = 0
    rotations: int = 0
    resubscriptions: int = 0
    rejections: int = 0
    gaps: int = 0
    events: Counter[str] = attrs.field(factory=Counter)
    malformed: int = 0
    unexpected_answers: int = 0
    last_error: str | None = None
    last_event_ms: int | None = None

    def statistics(self) -> UserStreamStatistics:
        conn = self.conn
        subscribed_at = conn.subscribed_at if conn is not None else None
        sub_id = conn.subscription_id if conn is not None else None
        return UserStreamStatistics(
            state=self.state,
            connected=conn is not None,
            subscribed=sub_id is not None,
            subscription_id=sub_id,
            uptime_s=0.0 if subscribed_at is None else trio.current_time() - subscribed_at,
            connects=self.connects,
            subscriptions=self.subscriptions,
            reconnects=self.reconnects,
            rotations=self.rotations,
            resubscriptions=self.resubscriptions,
            rejections=self.rejections,
            gaps=self.gaps,
            events=dict(self.events),
            malformed=self.malformed,
            unexpected_answers=self.unexpected_answers,
            last_error=self.last_error,
            last_event_ms=self.last_event_ms,
        )

    def _set_state(self, state: UserStreamState) -> None:
        self.state = state
        self.changed.unpark_all()

    def continue_from(self, previous: _Service) -> None:
        """Carry ``previous``'s counters over (a restart after a crash): they never reset.

        The first subscription then follows a gap: nobody listened while it was down.
        """
        self.attempts = previous.attempts
        self.connects = previous.connects
        self.subscriptions = previous.subscriptions
        self.reconnects = previous.reconnects
        self.rotations = previous.rotations
        self.resubscriptions = previous.resubscriptions
        self.rejections = previous.rejections
        self.gaps = previous.gaps
        self.events = Counter(previous.events)
        self.malformed = previous.malformed
        self.unexpected_answers = previous.unexpected_answers
        self.last_error = previous.last_error
        self.last_event_ms = previous.last_event_ms
        self.gap_pending = True

    def stopped(self) -> None:
        """The service ended (a crash or a cancellation): nothing is connected any more."""
        self.conn = None
        self._set_state(UserStreamState.BACKOFF)

    async def _announce(self, reason: str | None) -> None:
        """Publish a :class:`UserStreamStatus` if availability changed since the last one."""
        available = self.state is UserStreamState.SUBSCRIBED
        if available == self.available:
            return
        self.available = available
        conn = self.conn
        await self.publish(
            UserStreamStatus(
                state=self.state,
                at=trio.current_time(),
                reason=None if available else reason,
                subscription_id=conn.subscription_id if available and conn is not None else None,
            )
        )

    # -- the reconnect loop ----------------------------------------------------------------------

    async def run(self) -> NoReturn:
        while True:
            planned = await self._attempt()
            if planned is not None:
                self.rotations += 1
                logger.info("user_stream.rotate reason=%s", planned)
                continue
            now = trio.current_time()
            delay = max(self.backoff.mark_failed(now), self.retry_after_s)
            self.retry_after_s = 0.0
            self.reconnects += 1
            self._set_state(UserStreamState.BACKOFF)
            await self._announce(self.last_error)
            self.settled.set()
            logger.info(
                "user_stream.reconnect attempt=%d delay_s=%.1f reason=%s",
                self.backoff.attempt,
                delay,
                self.last_error,
            )
            await trio.sleep(delay)

    async def _attempt(self) -> str | None:
        """One connection, from connect to its end: the reason of a planned end, else None.

        Exchange and transport failures end it (logged once, here); bugs propagate.
        """
        self.attempts += 1
        self._set_state(UserStreamState.CONNECTING)
        error: str | None = None
        planned: str | None = None
        try:
            planned = await self._connect_and_serve()
        except* (ExchangeError, CircuitOpenError) as group:
            # CircuitOpenError: the breaker refused the attempt (nothing was dialled); it backs
            # off like any failed connect. Rate limits and bans also set their retry-after.
            leaf = first_leaf(group)
            if isinstance(leaf, (RateLimitedError, IpBannedError)):
                self.retry_after_s = leaf.retry_after_s
            error = describe_error(leaf)
        except* (trio_websocket.HandshakeError, OSError) as group:
            # Raised by trio-websocket's reader task (a rejected handshake), not by our code.
            error = error or describe_error(translate_connect_error(first_leaf(group)))
        except* LocalProtocolError as group:
            # trio-websocket#184: a server ping crossing our close frame makes trio-websocket's
            # reader answer with a pong that wsproto refuses. The connection is over either way;
            # it is a loss only if we were not replacing it on purpose (and nothing else failed
            # first: the first error is the cause, this one a consequence of closing).
            current = self.conn
            if current is None or current.planned is None:
                error = error or describe_error(
                    ConnectionLostError(f"closing: {first_leaf(group)}")
                )
        finally:
            conn, self.conn = self.conn, None
            if planned is None and error is None and conn is not None:
                planned = conn.planned
            # Nobody listens from now until the next subscription: whatever happens meanwhile
            # must be reconciled then.
            self.gap_pending = True
            if error is not None:
                self.last_error = error
            self._log_end(conn, error or planned or "cancelled", planned=error is None)
            self.changed.unpark_all()
        return planned

    def _log_end(self, conn: Connection | None, reason: str, *, planned: bool) -> None:
        level = logging.INFO if planned else logging.WARNING
        if conn is None:
            logger.log(
                level, "user_stream.connect_failed attempt=%d reason=%s", self.attempts, reason
            )
        elif conn.subscribed_at is None:
            logger.log(
                level,
                "user_stream.subscribe_failed attempt=%d during=%s reason=%s",
                self.attempts,
                conn.during,
                reason,
            )
        else:
            logger.log(
                level,
                "user_stream.disconnect during=%s reason=%s age_s=%.1f",
                conn.during,
                reason,
                trio.current_time() - conn.connected_at,
            )

    async def _connect_and_serve(self) -> str:
        logger.info("user_stream.connect attempt=%d url=%s", self.attempts, self.url)
        async with trio.open_nursery() as nursery:
            if self.breaker is None:
                ws = await self._dial(nursery)
            else:
                # Around the timeout scope, not inside it: a connect timeout is the breaker's
                # failure, not a cancelled (abandoned) call.
                async with self.breaker.guard():
                    ws = await self._dial(nursery)
            now = trio.current_time()
            conn = self.conn = Connection(ws, connected_at=now, last_frame_at=now)
            self.connects += 1
            self._set_state(UserStreamState.SUBSCRIBING)
            logger.info("user_stream.connected attempt=%d", self.attempts)
            try:
                return await self._serve(conn)
            finally:
                await self._close(conn)
                nursery.cancel_scope.cancel()

    async def _dial(self, nursery: trio.Nursery) -> WsApiWebSocket:
        """One connect attempt within ``connect_timeout_s``; errors translated to ConnectError."""
        with trio.move_on_after(self.config.connect_timeout_s) as connect_scope:
            try:
                ws = await self.connector(
                    nursery,
                    self.url,
                    message_queue_size=self.config.message_queue_size,
                    role="user_stream",
                )
            except (
                trio_websocket.HandshakeError,
                trio_websocket.ConnectionClosed,
                OSError,
            ) as exc:
                raise translate_connect_error(exc) from exc
            if not isinstance(ws, WsApiWebSocket):
                raise TypeError(f"the connector returned {type(ws).__name__}, which cannot send")
            return ws
        assert connect_scope.cancelled_caught
        raise ConnectError(f"connect timed out after {self.config.connect_timeout_s:g} s")

    async def _close(self, conn: Connection) -> None:
        """End the subscription and close, under a bounded shield (never raises)."""
        if conn.broken or trio.current_effective_deadline() == -math.inf:
            # The service itself is cancelled, trio-websocket's reader task included, or the
            # peer is gone or mute: no answer will be read, so only give our frames
            # CLOSE_ON_CANCEL_S to leave.
            bound = CLOSE_ON_CANCEL_S
        else:
            bound = self.config.disconnect_timeout_s
        with trio.CancelScope(shield=True), trio.move_on_after(bound):
            if conn.subscription_id is not None and not conn.broken:
                _, request = self.wire.request(
                    _UNSUBSCRIBE, {"subscriptionId": conn.subscription_id}
                )
                with contextlib.suppress(trio_websocket.ConnectionClosed, LocalProtocolError):
                    await conn.ws.send_message(request)
            await conn.ws.aclose()

    # -- one connection --------------------------------------------------------------------------

    async def _serve(self, conn: Connection) -> str:
        """Subscribe, then relay until a planned end (returned) or a failure (raised)."""
        try:
            await self._subscribe(conn)
            rotate_at = conn.connected_at + self.config.rotate_after_s
            while True:
                if conn.shutdown_notice:
                    conn.planned = "serverShutdown"
                    return conn.planned
                if conn.terminated:
                    conn.terminated = False
                    self._set_state(UserStreamState.SUBSCRIBING)
                    await self._announce("eventStreamTerminated")
                    self.resubscriptions += 1
                    await self._subscribe(conn)
                    continue
                if self.gap_pending and trio.current_time() >= self.gap_due_at:
                    await self._close_gap(conn)
                if trio.current_time() >= rotate_at:
                    conn.planned = "age"
                    return conn.planned
                conn.during = "relay"
                keepalive_at = conn.last_frame_at + self.config.keepalive_after_s
                raw = await self.wire.receive(conn, min(keepalive_at, rotate_at, self.gap_due_at))
                if raw is None:
                    if trio.current_time() >= keepalive_at:
                        await self._call(conn, _PING)
                    continue
                answer = await self._dispatch(conn, raw)
                if answer is not None:
                    self._unsolicited(answer)
        except ConnectionLostError:
            if conn.shutdown_notice:
                conn.planned = "serverShutdown"  # the server closed first, as it announced
                return conn.planned
            raise

    async def _subscribe(self, conn: Connection) -> None:
        if self.wire.signer.key_type == ED25519_KEY_TYPE:
            await self._call(conn, _LOGON, self.wire.signed_params())
            answer = await self._call(conn, _SUBSCRIBE)
        else:
            answer = await self._call(conn, _SUBSCRIBE_SIGNED, self.wire.signed_params())
        conn.subscription_id = decode_subscription_id(answer.result)
        now = trio.current_time()
        conn.subscribed_at = now
        self.subscriptions += 1
        self.backoff.mark_healthy(now)
        logger.info(
            "user_stream.subscribed subscription=%d key_type=%s subscriptions=%d",
            conn.subscription_id,
            self.wire.signer.key_type,
            self.subscriptions,
        )
        # Reconcile before reporting SUBSCRIBED: "available" means the gap is closed too.
        # Events that arrive meanwhile wait in trio-websocket's queue and follow in order.
        if self.gap_pending:
            await self._close_gap(conn)
        conn.during = "relay"
        self._set_state(UserStreamState.SUBSCRIBED)
        await self._announce(None)
        self.settled.set()

    async def _close_gap(self, conn: Connection) -> None:
        self.gap_pending = False
        self.gap_due_at = math.inf
        self.last_gap_at = trio.current_time()
        self.gaps += 1
        logger.info("user_stream.gap gaps=%d reconcile=%s", self.gaps, self.on_gap is not None)
        if self.on_gap is not None:
            conn.during = "on_gap"
            await self.on_gap()

    async def _call(
        self, conn: Connection, method: str, params: dict[str, str | int] | None = None
    ) -> WsApiResponse:
        """Send one request; relay frames until its answer arrives (within the timeout).

        Raises:
            ExchangeRejectedError, RateLimitedError, IpBannedError: an error answer.
            ReadTimeoutError: no answer within ``request_timeout_s``.
            ConnectionLostError: the connection broke.
        """
        request_id, request = self.wire.request(method, params)
        conn.during = method
        await self.wire.send(conn, request)
        deadline = trio.current_time() + self.config.request_timeout_s
        while True:
            raw = await self.wire.receive(conn, deadline)
            if raw is None:
                conn.broken = True
                raise ReadTimeoutError(
                    f"no answer to {method} within {self.config.request_timeout_s:g} s"
                )
            answer = await self._dispatch(conn, raw)
            if answer is None:
                continue
            if answer.id != request_id:
                self._unsolicited(answer)
                continue
            if not answer.ok:
                self.rejections += 1
                raise self.wire.rejection(answer)
            return answer

    def _unsolicited(self, answer: WsApiResponse) -> None:
        if answer.id is None and not answer.ok:
            # Binance answers a revoked session (its key deleted or disabled) with id null.
            self.rejections += 1
            raise self.wire.rejection(answer)
        self.unexpected_answers += 1
        logger.info(
            "user_stream.unexpected_answer status=%d code=%s",
            answer.status,
            answer.error_code,
        )

    async def _dispatch(self, conn: Connection, raw: str | bytes) -> WsApiResponse | None:
        """Handle one frame: relay an event, record a notice, or return an answer."""
        try:
            frame = decode_ws_api_frame(raw)
        except ExchangeProtocolError as exc:
            self.malformed += 1
            self.gap_pending = True  # it may have been an order update
            if self.gap_due_at == math.inf:
                delay = self.config.malformed_gap_delay_s
                self.gap_due_at = max(trio.current_time(), self.last_gap_at) + delay
            logger.warning("user_stream.malformed bytes=%d reason=%s", len(raw), exc)
            return None
        if isinstance(frame, WsApiResponse):
            return frame
        self.events[frame.event_type] += 1
        event = frame.event
        if isinstance(event, ExecutionReport):
            self.last_event_ms = event.event_time_ms
            await self.publish(event.to_order_update())
        elif isinstance(event, AccountBalances):
            self.last_event_ms = event.event_time_ms
            await self.publish(event)
        elif isinstance(event, StreamTerminated):
            if event.subscription_id is not None and event.subscription_id == conn.subscription_id:
                logger.warning("user_stream.terminated subscription=%d", event.subscription_id)
                conn.subscription_id = None
                conn.subscribed_at = None
                conn.terminated = True
                self.gap_pending = True
            else:
                logger.info("user_stream.terminated_other subscription=%s", event.subscription_id)
        elif isinstance(event, ServerShutdown):
            logger.info("user_stream.server_shutdown")
            conn.shutdown_notice = True
        return None


class UserStreamHandle:
    """What :func:`run_user_stream` hands to ``nursery.start``: statistics and a wait.

    The handle is read-only; cancelling the service's task stops the stream. A
    :func:`run_user_stream` started with ``resume=handle`` takes it over: from then on the handle
    reads (and :meth:`wait_subscribed` waits on) the new run.
    """

    def __init__(self, service: _Service) -> None:
        self._service = service
        self.url: str = service.url
        """The WebSocket API URL."""

    def _continue_with(self, service: _Service) -> None:
        """Read ``service`` from now on (a resumed :func:`run_user_stream`)."""
        previous, self._service = self._service, service
        previous.changed.unpark_all()  # waiters park on the new service's lot

    def statistics(self) -> UserStreamStatistics:
        """A snapshot: state, subscription, counters, last error and last event time."""
        return self._service.statistics()

    async def wait_subscribed(self, subscriptions: int = 1) -> None:
        """Wait until a subscription is live and at least ``subscriptions`` have been made."""
        await trio.lowlevel.checkpoint()
        while not (
            (service := self._service).state is UserStreamState.SUBSCRIBED
            and service.subscriptions >= subscriptions
        ):
            await service.changed.park()  # a resumed run unparks it: then its own service


async def run_user_stream(
    url: str,
    *,
    api_key: Secret,
    signer: Signer,
    publish: UserEventSink,
    on_gap: GapHook | None = None,
    breaker: CircuitBreaker | None = None,
    config: UserStreamConfig | None = None,
    connector: WebSocketConnector = connect_tcp_websocket,
    server_time_ms: WallClock = system_wall_clock_ms,
    rng: random.Random | None = None,
    resume: UserStreamHandle | None = None,
    task_status: trio.TaskStatus[UserStreamHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep a user data subscription on the WebSocket API and publish what it reports.

    Publishes :class:`~genesis.models.events.OrderUpdate` (``source=USER_STREAM``; the order's
    ``fills`` is the fill the report carries), :class:`~genesis.models.events.AccountBalances`
    and :class:`~genesis.models.events.UserStreamStatus` (availability changes), each awaited.

    Args:
        url: The WS API URL, e.g. ``Settings.ws_api_url`` or the simulator's
            ``ws://127.0.0.1:<port>/ws-api/v3``.
        api_key: The API key (sent in the signed params, never logged).
        signer: Signs the logon (Ed25519 keys) or the subscribe (any other key type).
        publish: Where events go, awaited (``bus.publish``: backpressure, never dropped).
        on_gap: Awaited after each subscription that follows a gap (after a failure, a
            planned reconnect, ``eventStreamTerminated`` or a malformed frame): reconcile the
            orders over REST. ``None``: gaps are only counted.
        breaker: The ``ws_api`` circuit breaker; every connect runs inside its ``guard()``.
        config: Deadlines, sizes, ``recvWindow`` and the backoff schedule.
        connector: Opens a WebSocket (seam for in-memory tests); its sockets must also have
            ``send_message`` (:class:`WsApiWebSocket`).
        server_time_ms: Epoch-ms clock for the signed ``timestamp`` (the gateway's
            server-synchronised ``server_time_ms``).
        rng: Source of backoff jitter when ``config.backoff.jitter`` is set.
        resume: The handle of an earlier run that ended (a crash; the supervisor in
            :mod:`genesis.app.supervisor` restarts it). This run takes the handle over and
            hands out that same one; its counters (connects, subscriptions, reconnects, gaps,
            events, ``last_error`` …) go on from the earlier run's, never from zero; ``state``,
            ``uptime_s`` and the subscription are this run's; the reconnect schedule starts
            afresh. Its first subscription follows a gap (every report while it was down is
            missed), so ``on_gap`` runs before it reports ``SUBSCRIBED``.
        task_status: Receives the :class:`UserStreamHandle` once the first attempt settled:
            subscribed, or failed (see the module docstring for why it does not wait longer).

    Raises:
        ValueError: jitter without ``rng``.
        TypeError: the connector returned a socket that cannot send (a bug).

    Runs until cancelled; exchange and transport trouble never escapes (it is a WARNING, a
    state in the statistics, and retried forever). On cancellation the subscription is ended
    and the connection closed, bounded by ``CLOSE_ON_CANCEL_S``. Once it has ended (a bug that
    propagated, or a cancellation) the handle reports ``BACKOFF``, not connected, until a
    resumed run takes it over.
    """
    config = UserStreamConfig() if config is None else config
    if config.backoff.jitter and rng is None:
        raise ValueError("backoff jitter needs an injected random.Random (rng=...)")
    service = _Service(
        url=url,
        wire=WsApiWire(api_key, signer, server_time_ms, config.recv_window_ms),
        publish=publish,
        on_gap=on_gap,
        breaker=breaker,
        config=config,
        connector=connector,
        backoff=Backoff(config.backoff, rng),
    )
    if resume is None:
        handle = UserStreamHandle(service)
    else:
        service.continue_from(resume._service)
        handle = resume
        handle._continue_with(service)
    logger.info(
        "user_stream.start url=%s key_type=%s resumed=%s",
        url,
        signer.key_type,
        resume is not None,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.run)
            await service.settled.wait()
            task_status.started(handle)
    finally:
        service.stopped()
    raise AssertionError("user stream task ended")  # pragma: no cover
