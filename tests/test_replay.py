"""``genesis replay``: a recording back onto a bus, in order, at recorded or full speed.

Pacing runs under ``autojump_clock`` and asserts exact virtual publish times; the recording is
written with the recorder's own encoder (:func:`genesis.app.record.encode_event`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

from genesis.app.cli import EXIT_CONFIG, EXIT_OK, main
from genesis.app.logging import reset_logging
from genesis.app.record import encode_event
from genesis.app.replay import (
    CHUNK_BYTES,
    LOGGED_BAD_LINES,
    MAX_PAUSE_S,
    ReplaySpeed,
    replay_file,
    replay_lines,
)
from genesis.bus import EventBus
from genesis.models.events import Alert, AlertKind, AlertSeverity, FeedDown
from tests.test_app_run import depth, ticker, trade

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from genesis.bus import Subscription

T0 = 1_767_225_600_000


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    reset_logging()


def at(event: object, ms: int) -> object:
    return attrs.evolve(event, event_time_ms=ms)  # type: ignore[misc]  # attrs instances


def lines_of(events: list[object]) -> list[bytes]:
    return [encode_event(e).rstrip(b"\n") for e in events]


def write(path: Path, events: list[object], *, extra: list[bytes] | None = None) -> None:
    data = b"".join(encode_event(e) for e in events) + b"".join(extra or [])
    path.write_bytes(data)


async def collect(sub: Subscription[object], count: int, into: list[tuple[float, object]]) -> None:
    async with sub:
        async for event in sub:
            into.append((trio.current_time(), event))
            if len(into) == count:
                return


async def test_recorded_speed_spaces_events_as_recorded_and_shortens_long_pauses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = [
        at(trade(trade_id=1), T0),
        at(trade(trade_id=2), T0 + 1_000),
        FeedDown(at=5.0, reason="no frames"),  # no wall time: goes out at once
        at(ticker(), T0 + 3_500),
        at(trade(trade_id=3), T0 + 3_600_000),  # an hour later: shortened
        at(trade(trade_id=4), T0 + 3_600_500),
    ]
    bus = EventBus()
    seen: list[tuple[float, object]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, bus.subscribe(object), len(events), seen)
            stats = await replay_lines(lines_of(events), bus, speed=ReplaySpeed.RECORDED)
    assert [e for _, e in seen] == events
    assert [t for t, _ in seen] == pytest.approx(
        [0.0, 1.0, 1.0, 3.5, 3.5 + MAX_PAUSE_S, 4.0 + MAX_PAUSE_S]
    )
    assert (stats.events, stats.bad_lines, stats.shortened_pauses) == (6, 0, 1)
    assert stats.by_type == {"Trade": 4, "FeedDown": 1, "Ticker": 1}


async def test_full_speed_publishes_everything_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = [at(trade(trade_id=i), T0 + i * 60_000) for i in range(1, 6)]
    bus = EventBus()
    seen: list[tuple[float, object]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, bus.subscribe(object), len(events), seen)
            await replay_lines(lines_of(events), bus, speed=ReplaySpeed.FULL)
    assert [e for _, e in seen] == events
    assert {t for t, _ in seen} == {0.0}


async def test_bad_lines_are_counted_and_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "session.jsonl"
    good = [trade(trade_id=1), depth(), trade(trade_id=2)]
    bad = [
        b"not json\n",
        b'{"type": "Gremlin"}\n',
        b'{"type": "Trade", "symbol": "BTCUSDT"}\n',
        b"[1, 2]\n",
        b"\n",  # blank: skipped, not bad
        *[b"{\n"] * LOGGED_BAD_LINES,
    ]
    path.write_bytes(encode_event(good[0]) + b"".join(bad) + b"".join(map(encode_event, good[1:])))
    bus = EventBus()
    seen: list[tuple[float, object]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, bus.subscribe(object), len(good), seen)
            with caplog.at_level(logging.WARNING, logger="genesis.app.replay"):
                stats = await replay_file(path, bus, speed=ReplaySpeed.FULL)
    assert [e for _, e in seen] == good
    assert (stats.events, stats.bad_lines, stats.first_bad_line) == (3, 4 + LOGGED_BAD_LINES, 2)
    messages = [r.getMessage() for r in caplog.records]
    bad_lines = [m for m in messages if m.startswith("replay.bad_line ")]
    assert len(bad_lines) == LOGGED_BAD_LINES
    assert bad_lines[0] == "replay.bad_line line=2 reason=not JSON"
    assert "unknown record type 'Gremlin'" in bad_lines[1]
    assert "replay.bad_lines_quiet more bad lines are only counted" in messages
    assert messages[-1].startswith("replay.done events=3 bad_lines=9 first_bad_line=2")


def test_cli_replays_a_recording_onto_the_dashboard_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "session.jsonl"
    alert = Alert(
        kind=AlertKind.FEED_DOWN, severity=AlertSeverity.ERROR, message="feed down", at_ms=T0
    )
    write(path, [trade(price="61000.00"), alert, depth(symbol="ETHUSDT")], extra=[b"oops\n"])
    assert main(["replay", str(path), "--speed", "full"]) == EXIT_OK
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert any("dashboard.price symbol=BTCUSDT last=61000.00" in line for line in lines)
    assert any(
        "dashboard.price symbol=ETHUSDT last=- tick=flat bid=60000.00" in line for line in lines
    )
    assert "replay.bad_line line=4 reason=not JSON" in err
    assert "replay.done events=3 bad_lines=1" in err


def test_cli_replay_of_a_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == EXIT_CONFIG
    assert "no such recording" in capsys.readouterr().err
    assert main(["replay", str(tmp_path), "--speed", "warp"]) == EXIT_CONFIG


async def test_a_file_larger_than_one_read_is_replayed_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    events: list[object] = [trade(trade_id=i) for i in range(1, 8001)]
    write(path, events)
    assert path.stat().st_size > CHUNK_BYTES  # lines cross chunk boundaries
    bus = EventBus()
    seen: list[tuple[float, object]] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                collect, bus.subscribe(object, buffer_size=10_000), len(events), seen
            )
            stats = await replay_file(path, bus, speed=ReplaySpeed.FULL)
    assert (stats.events, stats.bad_lines) == (8000, 0)
    assert [e for _, e in seen] == events
