"""The bus on NATS JetStream: a publisher bridge and a consumer that feeds a local bus.

Genesis bridges its :class:`~genesis.bus.EventBus` onto JetStream instead of building a broker:

- :func:`run_bridge` (a task of ``genesis run`` when ``GENESIS_NATS_URL`` or ``--nats`` is
  set) publishes bus events to ``genesis.<kind>.<SYMBOL>`` with a ``Nats-Msg-Id`` from the
  event's exchange identity (:func:`message_id`), so redundant instances on the same symbols
  publish each event under one id and the broker's duplicate window keeps it once. Market data
  waits in a bounded buffer (drop oldest, counted); order events in the journal's outbox until
  acknowledged.
- :func:`subscribe` / :func:`run_consumer` decode the messages back into the same typed events
  on a local bus, in stream order, durable or ephemeral (``genesis tail SUBJECT``).

nats-py (asyncio) runs on its own event loop in one worker thread (:mod:`._host`); only
:mod:`._nats` imports it.
"""

from __future__ import annotations

from genesis.bridge._consumer import (
    Consumer,
    ConsumerConfig,
    ConsumerStatistics,
    decode_message,
    run_consumer,
    subscribe,
)
from genesis.bridge._ids import (
    ACCOUNT_SUBJECT_TOKEN,
    KINDS,
    ORDER_KINDS,
    SUBJECT_PREFIX,
    kind_of,
    message_id,
    subject_for,
)
from genesis.bridge._nats import MIN_DUPLICATE_WINDOW_S, StreamSpec
from genesis.bridge._publisher import (
    Bridge,
    BridgeConfig,
    BridgeStatistics,
    encode_message,
    run_bridge,
)

__all__ = [
    "ACCOUNT_SUBJECT_TOKEN",
    "KINDS",
    "MIN_DUPLICATE_WINDOW_S",
    "ORDER_KINDS",
    "SUBJECT_PREFIX",
    "Bridge",
    "BridgeConfig",
    "BridgeStatistics",
    "Consumer",
    "ConsumerConfig",
    "ConsumerStatistics",
    "StreamSpec",
    "decode_message",
    "encode_message",
    "kind_of",
    "message_id",
    "run_bridge",
    "run_consumer",
    "subject_for",
    "subscribe",
]
