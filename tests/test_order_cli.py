"""``genesis order``: real subprocesses against one real ``genesis sim`` subprocess.

Rules that keep these tests deterministic and fast:

- One simulator serves the module (``sim`` fixture); it is started on port 0 and its REST URL
  is read from its stdout, and it is terminated (then killed) at teardown whatever happened.
- Every CLI run is a subprocess in a temporary working directory (no stray ``.env``) with an
  environment cleaned of Genesis variables, under a ``trio.fail_after`` deadline.
- Each test uses its own client order ids or symbol, so tests do not depend on one another;
  the facts are checked against the simulator itself (signed ``GET /api/v3/openOrders`` made
  here with ``hmac``, not with Genesis's signing code, and ``GET /sim/status``).
- Nothing sleeps: a run ends when its process does, the simulator is ready when it prints.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.parse
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import attrs
import httpx
import pytest
import trio

from genesis.app.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main
from genesis.app.logging import reset_logging
from genesis.config import ENV_VARS
from genesis.models.events import OrderUpdateSource
from genesis.models.orders import OrderStatus
from genesis.orders.journal import JournalEventKind, open_journal
from genesis.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CLI_DEADLINE_S: Final = 20.0
SIM_START_DEADLINE_S: Final = 30.0
REQUIRED_KEYS: Final = (
    "client_order_id", "exchange_order_id", "symbol", "side", "type", "status", "price",
    "quantity", "filled_quantity",
)  # fmt: skip
DECIMAL_KEYS: Final = ("price", "quantity", "filled_quantity", "quote_filled_quantity")
# 0.001 BTC at 30000: half the simulator's start price, so it rests on the book as NEW.
RESTING: Final = ("--symbol", "BTCUSDT", "--side", "BUY", "--type", "LIMIT",
                  "--quantity", "0.001", "--price", "30000")  # fmt: skip


@attrs.frozen
class Sim:
    rest_url: str
    cwd: Path
    env: dict[str, str]


@attrs.frozen
class Run:
    code: int
    out: str
    err: str

    def one_json(self) -> object:
        """The single JSON document on stdout (``json.loads`` rejects anything after it)."""
        assert self.out.endswith("\n"), self
        assert self.out.count("\n") == 1, self
        return json.loads(self.out)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_VARS}


def _read_rest_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + SIM_START_DEADLINE_S
    output = b""
    while (match := re.search(rb"^rest: (http://\S+)$", output, re.MULTILINE)) is None:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no URL from genesis sim: {output!r} {log.read_text()!r}"
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"genesis sim exited: {output!r} {log.read_text()!r}"
            output += chunk
    return match.group(1).decode()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """A ``genesis sim --port 0`` subprocess for the whole module, and a CLI environment."""
    cwd = tmp_path_factory.mktemp("order-cli")
    log = cwd / "sim.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genesis.app.cli", "sim", "--port", "0",
             "--log-level", "WARNING"],
            cwd=cwd, env=_clean_env(), stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    try:
        rest_url = _read_rest_url(proc, log)
        env = _clean_env() | {
            "BINANCE_API_KEY": DEFAULT_API_KEY,
            "BINANCE_SECRET_KEY": DEFAULT_API_SECRET,
            "BINANCE_TESTNET": "true",
            "BINANCE_TESTNET_URL": rest_url,
        }
        yield Sim(rest_url=rest_url, cwd=cwd, env=env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


async def order(sim: Sim, *args: str, env: dict[str, str] | None = None) -> Run:
    """``genesis order ARGS`` as a subprocess; its exit code, stdout and stderr."""
    with trio.fail_after(CLI_DEADLINE_S):
        proc = await trio.run_process(
            [sys.executable, "-m", "genesis.app.cli", "order", *args],
            cwd=sim.cwd, env=sim.env if env is None else env,
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    run = Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert "Traceback" not in run.err, run
    return run


async def place(sim: Sim, client_order_id: str, *args: str) -> dict[str, object]:
    run = await order(sim, "place", *(args or RESTING), "--client-order-id", client_order_id,
                      "--json")  # fmt: skip
    assert run.code == EXIT_OK, run
    placed = run.one_json()
    assert isinstance(placed, dict)
    return placed


async def sim_open_orders(sim: Sim, symbol: str) -> list[dict[str, object]]:
    """The simulator's own ``GET /api/v3/openOrders``, signed here with ``hmac``."""
    query = urllib.parse.urlencode({"symbol": symbol, "timestamp": int(time.time() * 1000)})
    signature = hmac.new(DEFAULT_API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    with trio.fail_after(CLI_DEADLINE_S):
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            response = await client.get(
                f"/api/v3/openOrders?{query}&signature={signature}",
                headers={"X-MBX-APIKEY": DEFAULT_API_KEY},
            )
    assert response.status_code == 200, response.text
    orders: list[dict[str, object]] = response.json()
    return orders


async def sim_admin(sim: Sim, method: str, path: str) -> dict[str, object]:
    with trio.fail_after(CLI_DEADLINE_S):
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            response = await client.request(method, path)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def assert_order_object(obj: object) -> dict[str, object]:
    assert isinstance(obj, dict)
    for key in REQUIRED_KEYS:
        assert key in obj, key
    for key in DECIMAL_KEYS:
        value = obj[key]
        if key == "price" and obj["type"] == "MARKET":
            assert value is None
            continue
        assert isinstance(value, str), (key, value)
        assert re.fullmatch(r"[0-9]+(\.[0-9]+)?", value), (key, value)  # plain, never 1E-3
    return obj


@pytest.fixture
def offline_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """In-process ``main``: no Genesis variables, no stray .env, logging reset after."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    reset_logging()


async def test_place_json_prints_exactly_one_object_with_decimal_strings(sim: Sim) -> None:
    run = await order(sim, "place", *RESTING, "--client-order-id", "t-place-json", "--json")
    assert run.code == EXIT_OK, run
    placed = assert_order_object(run.one_json())
    assert placed["client_order_id"] == "t-place-json"
    assert isinstance(placed["exchange_order_id"], int)
    assert (placed["symbol"], placed["side"], placed["type"]) == ("BTCUSDT", "BUY", "LIMIT")
    assert (placed["status"], placed["time_in_force"]) == ("NEW", "GTC")
    assert (placed["price"], placed["quantity"], placed["filled_quantity"]) == (
        "30000", "0.001", "0",
    )  # fmt: skip
    assert run.err == ""  # logs at the default WARNING level: none for a clean placement
    on_book = [
        o for o in await sim_open_orders(sim, "BTCUSDT") if o["clientOrderId"] == "t-place-json"
    ]
    assert [o["orderId"] for o in on_book] == [placed["exchange_order_id"]]


async def test_market_order_by_quote_quantity_reports_its_fills(sim: Sim) -> None:
    args = ("--symbol", "BTCUSDT", "--side", "BUY", "--type", "MARKET", "--quote-quantity", "100")
    filled = assert_order_object(await place(sim, "t-market", *args))
    assert (filled["status"], filled["price"]) == ("FILLED", None)
    assert isinstance(filled["fills"], list)
    assert len(filled["fills"]) >= 1
    assert isinstance(filled["average_price"], str)
    assert Decimal(99) <= Decimal(str(filled["quote_filled_quantity"])) <= Decimal(100)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--type", "LIMIT_MAKER", "--price", "90000"), {"price": "90000", "stop_price": None,
                                                        "time_in_force": "GTC"}),
        (("--type", "STOP_LOSS_LIMIT", "--price", "29990", "--stop-price", "30000"),
         {"price": "29990", "stop_price": "30000", "time_in_force": "GTC"}),
    ],
)  # fmt: skip
async def test_maker_and_stop_orders_rest_with_their_prices(
    sim: Sim, args: tuple[str, ...], expected: dict[str, object]
) -> None:
    client_order_id = f"t-{args[1].lower().replace('_', '-')}"
    common = ("--symbol", "BTCUSDT", "--side", "SELL", "--quantity", "0.001")
    placed = assert_order_object(await place(sim, client_order_id, *common, *args))
    assert (placed["status"], placed["type"]) == ("NEW", args[1])
    assert {key: placed[key] for key in expected} == expected


async def test_status_by_client_id_and_by_order_id_print_the_same_order(sim: Sim) -> None:
    placed = await place(sim, "t-status")
    by_id = await order(sim, "status", "--symbol", "BTCUSDT", "--id", "t-status", "--json")
    by_order_id = await order(
        sim, "status", "--symbol", "BTCUSDT", "--order-id", str(placed["exchange_order_id"]),
        "--json",
    )  # fmt: skip
    assert by_id.code == by_order_id.code == EXIT_OK, (by_id, by_order_id)
    first, second = (
        assert_order_object(by_id.one_json()),
        assert_order_object(by_order_id.one_json()),
    )
    assert first == second
    assert first["exchange_order_id"] == placed["exchange_order_id"]
    assert (first["status"], first["client_order_id"]) == ("NEW", "t-status")


async def test_cancel_prints_the_canceled_order_and_it_leaves_the_book(sim: Sim) -> None:
    placed = await place(sim, "t-cancel")
    run = await order(sim, "cancel", "--symbol", "BTCUSDT", "--id", "t-cancel", "--json")
    assert run.code == EXIT_OK, run
    canceled = assert_order_object(run.one_json())
    assert (canceled["status"], canceled["client_order_id"]) == ("CANCELED", "t-cancel")
    assert canceled["exchange_order_id"] == placed["exchange_order_id"]
    assert all(o["clientOrderId"] != "t-cancel" for o in await sim_open_orders(sim, "BTCUSDT"))
    again = await order(sim, "cancel", "--symbol", "BTCUSDT", "--id", "t-cancel")
    assert (again.code, again.out) == (EXIT_FAILURE, "")
    assert "genesis: exchange rejected the cancel: -2011" in again.err


async def test_open_prints_an_array_of_order_objects(sim: Sim) -> None:
    await place(sim, "t-open-1")
    await place(sim, "t-open-2")
    run = await order(sim, "open", "--symbol", "BTCUSDT", "--json")
    assert run.code == EXIT_OK, run
    listed = run.one_json()
    assert isinstance(listed, list)
    ids = [assert_order_object(o)["client_order_id"] for o in listed]
    assert {"t-open-1", "t-open-2"} <= set(ids)
    expected = {str(o["clientOrderId"]) for o in await sim_open_orders(sim, "BTCUSDT")}
    assert set(ids) == expected


async def test_test_validates_the_order_and_places_nothing(sim: Sim) -> None:
    run = await order(sim, "test", *RESTING, "--client-order-id", "t-test", "--json")
    assert run.code == EXIT_OK, run
    assert run.one_json() == {
        "ok": True, "client_order_id": "t-test", "symbol": "BTCUSDT", "side": "BUY",
        "type": "LIMIT", "time_in_force": "GTC", "price": "30000", "stop_price": None,
        "quantity": "0.001", "quote_quantity": None,
    }  # fmt: skip
    status = await order(sim, "status", "--symbol", "BTCUSDT", "--id", "t-test")
    assert status.code == EXIT_FAILURE
    assert "-2013 Order does not exist." in status.err
    # 0.0001 × 30000 = 3 < NOTIONAL 5 (a tiny price would meet PERCENT_PRICE_BY_SIDE first).
    rejected = await order(sim, "test", *RESTING[:-3], "0.0001", *RESTING[-2:])
    assert (rejected.code, rejected.out) == (EXIT_FAILURE, "")
    assert "genesis: exchange rejected the order: -1013 Filter failure: NOTIONAL" in rejected.err


@pytest.mark.parametrize(
    ("quantity", "price", "expected"),
    [
        (
            "100",
            "30000",
            "genesis: exchange rejected the order: -2010 Account has insufficient balance for "
            "requested action.",
        ),
        # Refused before sending, by the exchangeInfo filters the journal cached.
        (
            "0.0001",
            "30000",
            "genesis: the order breaks the exchange's NOTIONAL filter (checked before sending; "
            "nothing was sent): 0.0001 × 30000 = 3 is below minNotional 5",
        ),
    ],
)
async def test_a_rejected_placement_exits_1_with_binance_code_and_nothing_on_stdout(
    sim: Sim, quantity: str, price: str, expected: str
) -> None:
    run = await order(sim, "place", "--symbol", "BTCUSDT", "--side", "BUY", "--type", "LIMIT",
                      "--quantity", quantity, "--price", price, "--json")  # fmt: skip
    assert (run.code, run.out) == (EXIT_FAILURE, "")
    assert run.err == f"{expected}\n"


async def test_human_output_is_one_short_line(sim: Sim) -> None:
    run = await order(sim, "place", *RESTING, "--client-order-id", "t-human")
    assert run.code == EXIT_OK, run
    assert re.fullmatch(
        r"NEW BUY LIMIT 0\.001 BTCUSDT @ 30000 client_order_id=t-human order_id=\d+\n", run.out
    ), run.out
    listed = await order(sim, "open", "--symbol", "BTCUSDT")
    assert run.out in listed.out.splitlines(keepends=True)


async def test_unknown_outcome_is_resolved_and_the_real_order_printed_once(sim: Sim) -> None:
    # The simulator executes the next order and answers 503 -1007; RECV_WINDOW=1000 keeps the
    # wait before the lookup (recvWindow + 1 s) short.
    await sim_admin(sim, "POST", "/sim/faults/execute-then-503")
    env = sim.env | {"RECV_WINDOW": "1000"}
    args = ("--symbol", "BNBUSDT", "--side", "BUY", "--type", "LIMIT", "--quantity", "0.1",
            "--price", "300", "--client-order-id", "t-unknown", "--timeout", "20")  # fmt: skip
    run = await order(sim, "place", *args, "--json", env=env)
    assert run.code == EXIT_OK, run
    assert "order.outcome_unknown client_order_id=t-unknown" in run.err  # the fault did fire
    resolved = assert_order_object(run.one_json())
    assert (resolved["status"], resolved["client_order_id"]) == ("NEW", "t-unknown")
    on_book = await sim_open_orders(sim, "BNBUSDT")
    assert [(o["clientOrderId"], o["orderId"]) for o in on_book] == [
        ("t-unknown", resolved["exchange_order_id"])
    ]
    status = await sim_admin(sim, "GET", "/sim/status")
    assert status["faults"]["rest"]["execute_then_503"] == 0  # type: ignore[index]  # JSON


async def test_unknown_outcome_still_unknown_at_the_deadline_exits_1_and_status_settles_it(
    sim: Sim,
) -> None:
    await sim_admin(sim, "POST", "/sim/faults/execute-then-503")
    env = sim.env | {"RECV_WINDOW": "1000"}  # the lookup waits 2 s: longer than --timeout
    args = ("--symbol", "ETHUSDT", "--side", "SELL", "--type", "LIMIT", "--quantity", "0.01",
            "--price", "9000", "--client-order-id", "t-deadline", "--timeout", "0.2")  # fmt: skip
    run = await order(sim, "place", *args, "--json", env=env)
    assert run.code == EXIT_FAILURE, run
    unknown = assert_order_object(run.one_json())
    assert (unknown["status"], unknown["exchange_order_id"]) == ("UNKNOWN", None)
    assert unknown["client_order_id"] == "t-deadline"
    assert "genesis order status --symbol ETHUSDT --id t-deadline" in run.err
    settled = await order(sim, "status", "--symbol", "ETHUSDT", "--id", "t-deadline", "--json")
    assert settled.code == EXIT_OK, settled
    assert assert_order_object(settled.one_json())["status"] == "NEW"
    assert len(await sim_open_orders(sim, "ETHUSDT")) == 1  # placed once, never resent


async def test_secrets_never_reach_the_output_even_at_debug_level(sim: Sim) -> None:
    run = await order(sim, "place", *RESTING, "--client-order-id", "t-debug", "--log-level",
                      "DEBUG", "--json")  # fmt: skip
    assert run.code == EXIT_OK, run
    assert "gateway.open" in run.err  # the debug logs did go to stderr ...
    assert_order_object(run.one_json())  # ... and stdout holds only the JSON
    for secret in (DEFAULT_API_KEY, DEFAULT_API_SECRET):
        assert secret not in run.err
        assert secret not in run.out


def test_log_lines_mask_the_credentials(
    sim: Sim,
    offline_cli: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Genesis never logs a credential; the console handler's masking is the last line of
    # defence, so check that the command hands it the credentials.
    for name, value in sim.env.items():
        if name in ENV_VARS:
            monkeypatch.setenv(name, value)
    assert main(["order", "open", "--symbol", "BTCUSDT", "--json"]) == EXIT_OK
    logging.getLogger("genesis.test").warning("leak %s %s", DEFAULT_API_KEY, DEFAULT_API_SECRET)
    captured = capsys.readouterr()
    assert isinstance(json.loads(captured.out), list)
    assert captured.err.rstrip().endswith("leak ******** ********")


async def test_an_unreachable_exchange_exits_1_naming_it(sim: Sim) -> None:
    with trio.socket.socket() as sock:  # a port nothing listens on once the socket closes
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = sim.env | {"BINANCE_TESTNET_URL": f"http://127.0.0.1:{port}"}
    run = await order(sim, "open", env=env)
    assert (run.code, run.out) == (EXIT_FAILURE, "")
    assert f"genesis: cannot reach the exchange at http://127.0.0.1:{port}" in run.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["place", *RESTING[:-1], "abc"], "argument --price: expected a positive decimal"),
        (["place", *RESTING[:-1], "NaN"], "argument --price: expected a positive decimal"),
        (["place", *RESTING[:-1], "inf"], "argument --price: expected a positive decimal"),
        (["place", *RESTING[:-1], "-5"], "argument --price: expected a positive decimal"),
        (["place", *RESTING[:-1], "0"], "argument --price: must be greater than 0"),
        (["place", *RESTING[:-3], "0.001x", "--price", "1"], "argument --quantity: expected"),
        (["place", *RESTING[:-3], "1e-3", "--price", "1"], "argument --quantity: expected"),
        (["place", *RESTING[:-2]], "bad order: a LIMIT order needs price"),
        (["place", *RESTING, "--quote-quantity", "5"], "quote_order_qty is for MARKET orders"),
        (["place", *RESTING, "--timeout", "0"], "argument --timeout"),
        (["place", *RESTING, "--client-order-id", "bad id"], "argument --client-order-id"),
        (["status", "--symbol", "BTCUSDT", "--id", "a", "--order-id", "1"], "not allowed with"),
        (["cancel", "--symbol", "BTCUSDT"], "one of the arguments --id --order-id is required"),
        (["status", "--symbol", "BTCUSDT", "--order-id", "x1"], "argument --order-id"),
    ],
)
def test_bad_arguments_exit_2_before_anything_is_sent(
    offline_cli: None, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["order", *argv]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_no_credentials_exit_2_and_say_how_to_use_genesis_sim(
    offline_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["order", "open", "--json"]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    for text in (
        "genesis sim --port 8080",
        f"BINANCE_API_KEY={DEFAULT_API_KEY}",
        f"BINANCE_SECRET_KEY={DEFAULT_API_SECRET}",
        "BINANCE_TESTNET=true",
        "BINANCE_TESTNET_URL=http://127.0.0.1:8080",
    ):
        assert text in captured.err, text


def test_production_needs_live(
    offline_cli: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("BINANCE_SECRET_KEY", DEFAULT_API_SECRET)
    assert main(["order", "open"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "pass --live to confirm" in err
    assert DEFAULT_API_SECRET not in err


# --- genesis order reconcile ------------------------------------------------------------------


async def sim_signed(sim: Sim, method: str, endpoint: str, params: dict[str, str]) -> object:
    """A signed REST call made here with ``hmac`` (another client of the same account)."""
    query = urllib.parse.urlencode({**params, "timestamp": int(time.time() * 1000)})
    signature = hmac.new(DEFAULT_API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    with trio.fail_after(CLI_DEADLINE_S):
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            response = await client.request(
                method,
                f"/api/v3/{endpoint}?{query}&signature={signature}",
                headers={"X-MBX-APIKEY": DEFAULT_API_KEY},
            )
    assert response.status_code == 200, response.text
    return response.json()


async def test_reconcile_applies_what_changed_behind_its_back_and_prints_the_report(
    sim: Sim, tmp_path: Path
) -> None:
    env = sim.env | {"GENESIS_DB": str(tmp_path / "reconcile.db")}
    run = await order(sim, "place", *RESTING, "--client-order-id", "t-rec-cancel", env=env)
    assert run.code == EXIT_OK, run
    # Behind Genesis's back: the order is cancelled, and another client places one.
    await sim_signed(sim, "DELETE", "order", {"symbol": "BTCUSDT",
                                              "origClientOrderId": "t-rec-cancel"})  # fmt: skip
    await sim_signed(sim, "POST", "order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "0.001", "price": "30000", "newClientOrderId": "t-rec-other",
    })  # fmt: skip
    run = await order(sim, "reconcile", "--symbol", "BTCUSDT", "--json", env=env)
    assert run.code == EXIT_OK, run
    report = run.one_json()
    assert isinstance(report, dict)
    open_ids = {str(o["clientOrderId"]) for o in await sim_open_orders(sim, "BTCUSDT")}
    assert "t-rec-other" in open_ids
    assert report == {
        "symbols": ["BTCUSDT"], "open_on_exchange": len(open_ids), "checked": 1,
        "changed": ["t-rec-cancel"], "external": report["external"], "never_sent": [],
        "never_existed": [], "still_unknown": [], "errors": [],
    }  # fmt: skip
    assert set(report["external"]) == open_ids  # every open order is new to this journal
    status = await order(sim, "status", "--symbol", "BTCUSDT", "--id", "t-rec-cancel", "--json",
                         env=env)  # fmt: skip
    assert assert_order_object(status.one_json())["status"] == "CANCELED"
    # Nothing left to do: the short human summary says so.
    again = await order(sim, "reconcile", "--symbol", "BTCUSDT", env=env)
    assert (again.code, again.err) == (EXIT_OK, ""), again
    assert again.out == (
        f"reconciled BTCUSDT: {len(open_ids)} open on the exchange, 0 journal orders queried\n"
        "the journal agrees with the exchange\n"
    )
    # A symbol the exchange refuses is an error: exit 1, the rest still reconciled.
    refused = await order(sim, "reconcile", "--symbol", "DOGEUSDT", "--json", env=env)
    assert refused.code == EXIT_FAILURE, refused
    body = refused.one_json()
    assert isinstance(body, dict)
    assert body["symbols"] == ["DOGEUSDT", "BTCUSDT"]  # the journal's unfinished orders' too
    assert body["errors"] == ["DOGEUSDT: ExchangeRejectedError: Binance error -1121: Invalid "
                              "symbol."]  # fmt: skip


async def _read_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await stream.receive_some()
        assert chunk, f"the process ended before {marker!r}: {seen!r}"
        seen += chunk
    return seen


async def test_a_placement_killed_in_flight_is_recovered_by_reconcile_after_restart(
    sim: Sim, tmp_path: Path
) -> None:
    db = tmp_path / "killed.db"
    env = sim.env | {"GENESIS_DB": str(db), "GENESIS_SYMBOLS": "BTCUSDT"}
    warm = await order(sim, "test", *RESTING, env=env)  # exchangeInfo now cached in the journal
    assert warm.code == EXIT_OK, warm
    rest = (await sim_admin(sim, "GET", "/sim/status"))["rest"]
    assert isinstance(rest, dict)
    # The placement's requests: 5 time-sync samples, then the order (exchangeInfo is cached).
    order_arrived = rest["requests"] + 6
    # Every REST answer now takes a second, sent after the request was processed: the order is
    # on the book while its placement still waits for the answer.
    await sim_admin(sim, "POST", "/sim/faults/latency?ms=1000")
    try:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "genesis.app.cli", "order", "place", *RESTING,
             "--client-order-id", "t-killed", "--log-level", "INFO"],
            cwd=sim.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        try:
            with trio.fail_after(CLI_DEADLINE_S):
                # Logged right before the intent is journaled and the order sent.
                await _read_until(proc.stderr, b"gateway.exchange_info_cached")
                while True:  # the simulator counts a request on arrival (no sleep: a round trip)
                    status = await sim_admin(sim, "GET", "/sim/status")
                    if status["rest"]["requests"] >= order_arrived:  # type: ignore[index]  # JSON
                        break
        finally:
            proc.kill()  # SIGKILL: no cleanup, no answer read, the journal as the disk has it
            await proc.wait()
            await trio.aclose_forcefully(proc.stderr)
        assert proc.returncode == -signal.SIGKILL
    finally:
        await sim_admin(sim, "POST", "/sim/faults/reset")
    on_book = [o for o in await sim_open_orders(sim, "BTCUSDT") if o["clientOrderId"] == "t-killed"]
    assert len(on_book) == 1  # placed exactly once
    run = await order(sim, "reconcile", "--json", env=env)  # the restart: same journal
    assert run.code == EXIT_OK, run
    report = run.one_json()
    assert isinstance(report, dict)
    assert (report["changed"], report["errors"]) == (["t-killed"], [])
    async with open_journal(db) as journal:
        entry = await journal.get("t-killed")
        assert entry is not None
        assert (entry.status, entry.exchange_status, entry.exchange_order_id) == (
            OrderStatus.PENDING, "NEW", on_book[0]["orderId"],
        )  # fmt: skip
        history = [(e.kind, e.source) for e in await journal.history("t-killed")]
    assert history == [
        (JournalEventKind.INTENT, None),
        (JournalEventKind.SENT, None),
        (JournalEventKind.UPDATE, OrderUpdateSource.RECONCILE),
    ]
