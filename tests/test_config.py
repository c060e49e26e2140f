"""Settings: every variable, .env parsing, precedence, validation, secrets and mode selection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from genesis.config import (
    DEFAULT_SYMBOLS,
    ENV_VARS,
    MAX_SYMBOLS,
    Mode,
    Secret,
    Settings,
    load_settings,
    parse_dotenv,
)
from genesis.errors import ConfigError
from genesis.exchange.endpoints import PRODUCTION, TESTNET

if TYPE_CHECKING:
    from pathlib import Path

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET_KEY = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
CREDS = {"BINANCE_API_KEY": API_KEY, "BINANCE_SECRET_KEY": SECRET_KEY}


def load(env: dict[str, str], **kwargs: object) -> Settings:
    """Settings from ``env`` only (no .env file unless given)."""
    kwargs.setdefault("env_file", None)
    return load_settings(env, **kwargs)  # type: ignore[arg-type]  # test helper passes through


def problems_of(env: dict[str, str], **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(env, **kwargs)
    return info.value.problems


# --- defaults and mode selection -------------------------------------------------------------


def test_empty_environment_selects_the_simulator_with_defaults() -> None:
    settings = load({})
    assert settings.mode is Mode.SIMULATOR
    assert settings.api_key is None
    assert settings.secret_key is None
    assert settings.rest_url is None
    assert settings.stream_url is None
    assert settings.recv_window_ms == 5000
    assert settings.symbols == DEFAULT_SYMBOLS == ("BTCUSDT", "ETHUSDT")
    assert settings.notes == ()


def test_credentials_with_testnet_true_select_testnet_urls() -> None:
    settings = load({**CREDS, "BINANCE_TESTNET": "true"})
    assert settings.mode is Mode.TESTNET
    assert settings.rest_url == TESTNET.rest_url
    assert settings.stream_url == TESTNET.stream_url
    assert settings.ws_api_url == TESTNET.ws_api_url
    assert settings.api_key is not None
    assert settings.api_key.reveal() == API_KEY
    assert settings.secret_key is not None
    assert settings.secret_key.reveal() == SECRET_KEY


def test_testnet_url_overrides_apply_and_lose_a_trailing_slash() -> None:
    settings = load(
        {
            **CREDS,
            "BINANCE_TESTNET": "yes",
            "BINANCE_TESTNET_URL": "http://127.0.0.1:8080/",
            "BINANCE_WS_URL": "ws://127.0.0.1:8081",
        }
    )
    assert settings.mode is Mode.TESTNET
    assert settings.rest_url == "http://127.0.0.1:8080"
    assert settings.stream_url == "ws://127.0.0.1:8081"


def test_production_needs_live() -> None:
    problems = problems_of(dict(CREDS))
    assert len(problems) == 1
    assert "--live" in problems[0]
    assert "PRODUCTION" in problems[0]


def test_production_with_live_uses_production_urls() -> None:
    settings = load({**CREDS, "BINANCE_TESTNET": "false"}, live=True)
    assert settings.mode is Mode.PRODUCTION
    assert settings.live is True
    assert settings.rest_url == PRODUCTION.rest_url
    assert settings.stream_url == PRODUCTION.stream_url
    assert settings.ws_api_url == PRODUCTION.ws_api_url


def test_production_accepts_a_stream_override_but_not_a_testnet_rest_url() -> None:
    settings = load({**CREDS, "BINANCE_WS_URL": "wss://data-stream.binance.vision"}, live=True)
    assert settings.stream_url == "wss://data-stream.binance.vision"
    problems = problems_of(
        {**CREDS, "BINANCE_TESTNET_URL": "https://testnet.binance.vision"}, live=True
    )
    assert problems == [
        "BINANCE_TESTNET_URL is set but BINANCE_TESTNET is false: set BINANCE_TESTNET=true "
        "for the testnet, or unset BINANCE_TESTNET_URL for production"
    ]


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ("true", Mode.TESTNET),
        ("TRUE", Mode.TESTNET),
        ("1", Mode.TESTNET),
        ("yes", Mode.TESTNET),
        (" Yes ", Mode.TESTNET),
        ("false", Mode.PRODUCTION),
        ("0", Mode.PRODUCTION),
        ("no", Mode.PRODUCTION),
        ("", Mode.PRODUCTION),
    ],
)
def test_testnet_flag_spellings(raw: str, mode: Mode) -> None:
    assert load({**CREDS, "BINANCE_TESTNET": raw}, live=True).mode is mode


def test_simulator_mode_ignores_url_overrides_and_says_so() -> None:
    settings = load({"BINANCE_WS_URL": "ws://127.0.0.1:9", "BINANCE_TESTNET": "true"})
    assert settings.mode is Mode.SIMULATOR
    assert settings.stream_url is None
    assert settings.notes == ("BINANCE_WS_URL is ignored in simulator mode (no credentials set)",)


@pytest.mark.parametrize("present", ["BINANCE_API_KEY", "BINANCE_SECRET_KEY"])
def test_only_one_credential_is_an_error(present: str) -> None:
    other = "BINANCE_SECRET_KEY" if present == "BINANCE_API_KEY" else "BINANCE_API_KEY"
    problems = problems_of({present: CREDS[present], "BINANCE_TESTNET": "true"})
    assert problems == [f"{present} is set but {other} is not: set both or neither"]


def test_empty_credentials_count_as_unset() -> None:
    assert load({"BINANCE_API_KEY": "", "BINANCE_SECRET_KEY": "  "}).mode is Mode.SIMULATOR


# --- individual variables --------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("5000", 5000), (" 60000 ", 60000)])
def test_recv_window_accepts_1_to_60000(raw: str, expected: int) -> None:
    assert load({"RECV_WINDOW": raw}).recv_window_ms == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "RECV_WINDOW must be between 1 and 60000 ms, got 0"),
        ("60001", "RECV_WINDOW must be between 1 and 60000 ms, got 60001"),
        ("-5", "RECV_WINDOW must be between 1 and 60000 ms, got -5"),
        ("5s", "RECV_WINDOW must be an integer number of ms, got '5s'"),
        ("6000.5", "RECV_WINDOW must be an integer number of ms, got '6000.5'"),
    ],
)
def test_recv_window_rejects_bad_values(raw: str, message: str) -> None:
    assert problems_of({"RECV_WINDOW": raw}) == [message]


def test_symbols_are_upper_cased_deduplicated_and_keep_their_order() -> None:
    settings = load({"GENESIS_SYMBOLS": " ethusdt, BTCUSDT,ETHUSDT ,,bnbusdt,"})
    assert settings.symbols == ("ETHUSDT", "BTCUSDT", "BNBUSDT")


@pytest.mark.parametrize("raw", ["", " , ,"])
def test_symbols_must_not_be_empty(raw: str) -> None:
    assert problems_of({"GENESIS_SYMBOLS": raw}) == [
        "GENESIS_SYMBOLS must name at least one symbol"
    ]


def test_symbols_must_be_alphanumeric() -> None:
    assert problems_of({"GENESIS_SYMBOLS": "BTCUSDT,BTC-USDT,ETH/USDT"}) == [
        "GENESIS_SYMBOLS entries must be 2-20 letters or digits, got 'BTC-USDT', 'ETH/USDT'"
    ]


def test_symbols_are_capped_by_the_streams_per_connection_limit() -> None:
    raw = ",".join(f"S{i:03d}USDT" for i in range(MAX_SYMBOLS + 1))
    (problem,) = problems_of({"GENESIS_SYMBOLS": raw})
    assert problem.startswith(f"GENESIS_SYMBOLS names {MAX_SYMBOLS + 1} symbols; at most 256")
    assert len(load({"GENESIS_SYMBOLS": raw.rsplit(",", 1)[0]}).symbols) == MAX_SYMBOLS


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("BINANCE_TESTNET_URL", "ftp://example.test", "must be a https:// or http:// URL"),
        ("BINANCE_TESTNET_URL", "testnet.binance.vision", "must be a https:// or http:// URL"),
        ("BINANCE_TESTNET_URL", "https://testnet.binance.vision/api", "without '/api'"),
        ("BINANCE_TESTNET_URL", "https://h.test/?x=1", "must not have a query"),
        ("BINANCE_TESTNET_URL", "https://h.test:99999", "is not a valid URL"),
        ("BINANCE_WS_URL", "https://stream.testnet.binance.vision", "must be a wss:// or ws://"),
        ("BINANCE_WS_URL", "wss://stream.testnet.binance.vision/ws", "without '/ws'"),
        ("BINANCE_WS_URL", "wss://stream.testnet.binance.vision/stream/", "without '/stream'"),
    ],
)
def test_bad_urls_are_reported(name: str, raw: str, fragment: str) -> None:
    (problem,) = problems_of({**CREDS, "BINANCE_TESTNET": "true", name: raw})
    assert problem.startswith(name)
    assert fragment in problem


def test_a_url_with_user_credentials_is_rejected_without_echoing_it() -> None:
    (problem,) = problems_of(
        {**CREDS, "BINANCE_TESTNET": "true", "BINANCE_TESTNET_URL": "https://me:hunter2@h.test"}
    )
    assert problem == "BINANCE_TESTNET_URL must not contain user credentials"


def test_bad_testnet_flag_is_reported() -> None:
    assert problems_of({"BINANCE_TESTNET": "maybe"}) == [
        "BINANCE_TESTNET must be true/false, 1/0 or yes/no, got 'maybe'"
    ]


def test_every_problem_is_listed_at_once() -> None:
    problems = problems_of(
        {
            "BINANCE_API_KEY": API_KEY,
            "BINANCE_TESTNET": "perhaps",
            "BINANCE_WS_URL": "http://x.test",
            "RECV_WINDOW": "0",
            "GENESIS_SYMBOLS": "BTC_USDT",
        }
    )
    assert len(problems) == 5
    joined = "\n".join(problems)
    for name in (
        "BINANCE_TESTNET must",
        "BINANCE_WS_URL must",
        "RECV_WINDOW must",
        "GENESIS_SYMBOLS entries",
        "BINANCE_API_KEY is set but BINANCE_SECRET_KEY is not",
    ):
        assert name in joined


# --- secrets -----------------------------------------------------------------------------------


def test_secret_repr_and_str_are_masked() -> None:
    secret = Secret(SECRET_KEY)
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "Secret('********')"
    assert f"{secret}" == "Secret('********')"
    assert secret.reveal() == SECRET_KEY


def test_settings_repr_never_shows_credentials() -> None:
    settings = load({**CREDS, "BINANCE_TESTNET": "1"})
    text = repr(settings) + str(settings)
    assert API_KEY not in text
    assert SECRET_KEY not in text
    assert "Secret('********')" in text


def test_config_errors_never_show_credentials(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"BINANCE_SECRET_KEY='{SECRET_KEY}\nBINANCE_API_KEY {API_KEY}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "BINANCE_SECRET_KEY": SECRET_KEY + " tail",
                "BINANCE_API_KEY": "bad\x07key",
                "BINANCE_TESTNET": "true",
            },
            env_file=env_file,
        )
    text = str(info.value) + repr(info.value) + "\n".join(info.value.problems)
    assert SECRET_KEY not in text
    assert API_KEY not in text
    assert "bad\x07key" not in text
    assert info.value.problems == [
        ".env line 1: BINANCE_SECRET_KEY has an unterminated or malformed quote",
        ".env line 2: expected KEY=VALUE",
        "BINANCE_API_KEY contains whitespace or non-printable characters",
        "BINANCE_SECRET_KEY contains whitespace or non-printable characters",
    ]


# --- .env files --------------------------------------------------------------------------------


def test_parse_dotenv_handles_comments_quotes_and_export() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "PLAIN=value",
            "SPACED = spaced value   ",
            "INLINE=abc # a comment",
            "HASH=abc#def",
            "export EXPORTED=1",
            'DOUBLE="a # not a comment\\n\\"q\\""',
            "SINGLE='raw \\n # kept' # comment",
            "EMPTY=",
            'EMPTY_QUOTED=""',
            "PLAIN=later wins",
        ]
    )
    values, problems = parse_dotenv(text)
    assert problems == []
    assert values == {
        "PLAIN": "later wins",
        "SPACED": "spaced value",
        "INLINE": "abc",
        "HASH": "abc#def",
        "EXPORTED": "1",
        "DOUBLE": 'a # not a comment\n"q"',
        "SINGLE": "raw \\n # kept",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
    }


def test_parse_dotenv_reports_bad_lines_by_number() -> None:
    values, problems = parse_dotenv("GOOD=1\njust words\n1BAD=x\nQ=\"open\nTRAIL='x' y\n")
    assert values == {"GOOD": "1"}
    assert problems == [
        ".env line 2: expected KEY=VALUE",
        ".env line 3: expected KEY=VALUE",
        ".env line 4: Q has an unterminated or malformed quote",
        ".env line 5: TRAIL has an unterminated or malformed quote",
    ]


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"BINANCE_API_KEY={API_KEY}\n"
        f'BINANCE_SECRET_KEY="{SECRET_KEY}"\n'
        "BINANCE_TESTNET=true\n"
        "RECV_WINDOW=7000\n"
        "GENESIS_SYMBOLS=BNBUSDT\n"
        "UNRELATED=ignored\n"
    )
    from_file = load_settings({}, env_file=env_file)
    assert from_file.mode is Mode.TESTNET
    assert from_file.recv_window_ms == 7000
    assert from_file.symbols == ("BNBUSDT",)
    assert from_file.secret_key == Secret(SECRET_KEY)

    overridden = load_settings(
        {"RECV_WINDOW": "9000", "GENESIS_SYMBOLS": "ethusdt", "BINANCE_TESTNET": "false"},
        env_file=env_file,
        live=True,
    )
    assert overridden.recv_window_ms == 9000
    assert overridden.symbols == ("ETHUSDT",)
    assert overridden.mode is Mode.PRODUCTION


def test_dotenv_file_may_have_a_bom_and_crlf_line_ends(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"\xef\xbb\xbfRECV_WINDOW=1234\r\nGENESIS_SYMBOLS=ETHUSDT\r\n")
    settings = load_settings({}, env_file=env_file)
    assert (settings.recv_window_ms, settings.symbols) == (1234, ("ETHUSDT",))


def test_an_empty_environment_value_overrides_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"BINANCE_API_KEY={API_KEY}\nBINANCE_SECRET_KEY={SECRET_KEY}\n")
    settings = load_settings({"BINANCE_API_KEY": "", "BINANCE_SECRET_KEY": ""}, env_file=env_file)
    assert settings.mode is Mode.SIMULATOR


def test_missing_env_file_is_skipped_unless_required(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    assert load_settings({}, env_file=missing).mode is Mode.SIMULATOR
    with pytest.raises(ConfigError) as info:
        load_settings({}, env_file=missing, env_file_required=True)
    assert info.value.problems == [f"env file {missing} does not exist"]


def test_an_unreadable_env_file_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, env_file=tmp_path)
    assert info.value.problems == [f"env file {tmp_path} cannot be read: IsADirectoryError"]


def test_env_file_problems_join_the_other_problems(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RECV_WINDOW=0\nnot a line\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"GENESIS_SYMBOLS": "!"}, env_file=env_file)
    assert info.value.problems == [
        ".env line 2: expected KEY=VALUE",
        "RECV_WINDOW must be between 1 and 60000 ms, got 0",
        "GENESIS_SYMBOLS entries must be 2-20 letters or digits, got '!'",
    ]
    assert str(info.value).startswith("invalid configuration:\n  - .env line 2")


# --- BINANCE_PRIVATE_KEY_PATH: an Ed25519 key file instead of the secret -----------------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A stand-in key file: config checks it exists and is readable, never parses it."""
    path = tmp_path / "ed25519.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot-parsed-here\n-----END PRIVATE KEY-----\n")
    return path


@pytest.fixture(params=["hmac", "ed25519"])
def credentials(request: pytest.FixtureRequest, key_file: Path) -> dict[str, str]:
    """Either complete credential set: API key + secret, or API key + private key path."""
    if request.param == "hmac":
        return dict(CREDS)
    return {"BINANCE_API_KEY": API_KEY, "BINANCE_PRIVATE_KEY_PATH": str(key_file)}


def test_new_variables_are_known() -> None:
    assert "BINANCE_PRIVATE_KEY_PATH" in ENV_VARS
    assert "BINANCE_WS_API_URL" in ENV_VARS


def test_api_key_and_private_key_path_select_testnet(key_file: Path) -> None:
    settings = load(
        {
            "BINANCE_API_KEY": API_KEY,
            "BINANCE_PRIVATE_KEY_PATH": str(key_file),
            "BINANCE_TESTNET": "1",
        }
    )
    assert settings.mode is Mode.TESTNET
    assert settings.private_key_path == str(key_file)
    assert settings.secret_key is None
    assert settings.api_key == Secret(API_KEY)
    assert settings.rest_url == TESTNET.rest_url


def test_either_credential_set_needs_live_for_production(credentials: dict[str, str]) -> None:
    problems = problems_of(credentials)
    assert len(problems) == 1
    assert "--live" in problems[0]
    settings = load(credentials, live=True)
    assert settings.mode is Mode.PRODUCTION
    assert settings.ws_api_url == PRODUCTION.ws_api_url


@pytest.mark.parametrize(("raw", "mode"), [("true", Mode.TESTNET), ("false", Mode.PRODUCTION)])
def test_either_credential_set_selects_the_same_mode(
    credentials: dict[str, str], raw: str, mode: Mode
) -> None:
    assert load({**credentials, "BINANCE_TESTNET": raw}, live=True).mode is mode


def test_simulator_mode_without_any_key_has_no_key_path() -> None:
    assert load({}).private_key_path is None


def test_private_key_path_without_api_key_is_an_error(key_file: Path) -> None:
    problems = problems_of({"BINANCE_PRIVATE_KEY_PATH": str(key_file), "BINANCE_TESTNET": "true"})
    assert problems == [
        "BINANCE_PRIVATE_KEY_PATH is set but BINANCE_API_KEY is not: set both or neither"
    ]


def test_secret_and_private_key_path_together_are_an_error(key_file: Path) -> None:
    problems = problems_of(
        {**CREDS, "BINANCE_PRIVATE_KEY_PATH": str(key_file), "BINANCE_TESTNET": "true"}
    )
    assert problems == [
        "BINANCE_SECRET_KEY and BINANCE_PRIVATE_KEY_PATH are both set: set one of "
        "BINANCE_SECRET_KEY (HMAC) or BINANCE_PRIVATE_KEY_PATH (Ed25519)"
    ]


def test_a_missing_key_file_is_named_by_variable_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    (problem,) = problems_of(
        {
            "BINANCE_API_KEY": API_KEY,
            "BINANCE_PRIVATE_KEY_PATH": str(missing),
            "BINANCE_TESTNET": "1",
        }
    )
    assert problem == f"BINANCE_PRIVATE_KEY_PATH names {str(missing)!r}, which does not exist"


def test_a_directory_or_unopenable_path_is_a_problem(tmp_path: Path) -> None:
    base = {"BINANCE_API_KEY": API_KEY, "BINANCE_TESTNET": "1"}
    (problem,) = problems_of({**base, "BINANCE_PRIVATE_KEY_PATH": str(tmp_path)})
    assert problem == (
        f"BINANCE_PRIVATE_KEY_PATH names {str(tmp_path)!r}, which is a directory, not a key file"
    )
    too_long = str(tmp_path / ("x" * 5000))  # ENAMETOOLONG, even for root
    (problem,) = problems_of({**base, "BINANCE_PRIVATE_KEY_PATH": too_long})
    assert problem.startswith("BINANCE_PRIVATE_KEY_PATH names ")
    assert problem.endswith("which cannot be read: OSError")


def test_key_file_content_never_appears_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text(SECRET_KEY)
    problems = problems_of({"BINANCE_PRIVATE_KEY_PATH": str(path), **CREDS})
    assert len(problems) == 2  # both signing keys, and production without --live
    assert not any(SECRET_KEY in p for p in problems)


def test_private_key_path_expands_home_and_may_come_from_the_env_file(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"BINANCE_API_KEY={API_KEY}\nBINANCE_PRIVATE_KEY_PATH=~/{key_file.name}\n"
        "BINANCE_TESTNET=true\n"
    )
    settings = load_settings({}, env_file=env_file)
    assert settings.private_key_path == str(key_file)
    assert settings.mode is Mode.TESTNET


# --- BINANCE_WS_API_URL ----------------------------------------------------------------------


def test_ws_api_url_override_applies_on_the_testnet(credentials: dict[str, str]) -> None:
    settings = load(
        {
            **credentials,
            "BINANCE_TESTNET": "true",
            "BINANCE_WS_API_URL": "ws://127.0.0.1:8081/ws-api/v3/",
        }
    )
    assert settings.ws_api_url == "ws://127.0.0.1:8081/ws-api/v3"
    assert settings.stream_url == TESTNET.stream_url


def test_ws_api_url_override_applies_in_production() -> None:
    url = "wss://ws-api.binance.com:9443/ws-api/v3"
    assert load({**CREDS, "BINANCE_WS_API_URL": url}, live=True).ws_api_url == url


def test_ws_api_url_is_ignored_in_simulator_mode_with_a_note() -> None:
    settings = load({"BINANCE_WS_API_URL": "ws://127.0.0.1:9/ws-api/v3"})
    assert settings.mode is Mode.SIMULATOR
    assert settings.ws_api_url is None
    assert settings.notes == (
        "BINANCE_WS_API_URL is ignored in simulator mode (no credentials set)",
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("https://ws-api.testnet.binance.vision/ws-api/v3", "must be a wss:// or ws:// URL"),
        ("wss://ws-api.testnet.binance.vision", "must be the full URL including its path"),
        ("wss://ws-api.testnet.binance.vision/", "must be the full URL including its path"),
        ("wss://h.test/ws-api/v3?returnRateLimits=false", "must not have a query"),
        ("wss://user:pw@h.test/ws-api/v3", "must not contain user credentials"),
    ],
)
def test_bad_ws_api_urls_are_reported(raw: str, fragment: str) -> None:
    (problem,) = problems_of({**CREDS, "BINANCE_TESTNET": "true", "BINANCE_WS_API_URL": raw})
    assert problem.startswith("BINANCE_WS_API_URL")
    assert fragment in problem


def test_new_problems_join_every_other_problem(tmp_path: Path) -> None:
    problems = problems_of(
        {
            **CREDS,
            "BINANCE_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem"),
            "BINANCE_WS_API_URL": "wss://h.test",
            "BINANCE_TESTNET": "true",
            "RECV_WINDOW": "0",
        }
    )
    assert len(problems) == 4
    joined = "\n".join(problems)
    for fragment in (
        "BINANCE_PRIVATE_KEY_PATH names",
        "BINANCE_WS_API_URL must be the full URL",
        "RECV_WINDOW must",
        "set one of BINANCE_SECRET_KEY (HMAC) or BINANCE_PRIVATE_KEY_PATH (Ed25519)",
    ):
        assert fragment in joined


def test_genesis_db_names_the_journal_file(tmp_path: Path) -> None:
    assert load_settings({}, env_file=None).db_path == ":memory:"  # the simulator's lifetime
    testnet = {
        "BINANCE_API_KEY": "k" * 64,
        "BINANCE_SECRET_KEY": "s" * 64,
        "BINANCE_TESTNET": "true",
    }
    assert load_settings(testnet, env_file=None).db_path == "genesis.db"
    path = tmp_path / "orders.db"
    assert load_settings({"GENESIS_DB": str(path)}, env_file=None).db_path == str(path)
    assert load_settings({"GENESIS_DB": ":memory:"}, env_file=None).db_path == ":memory:"
    with pytest.raises(ConfigError) as info:
        load_settings({"GENESIS_DB": str(tmp_path)}, env_file=None)
    [problem] = info.value.problems
    assert problem.startswith("GENESIS_DB names a directory, not a file: ")
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(ConfigError, match="GENESIS_DB: the directory of"):
        load_settings({"GENESIS_DB": str(missing)}, env_file=None)
