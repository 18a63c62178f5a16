"""Configuration (bot/config.py): the example file, interpolation, durations, one-line errors."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from bot.core.config import DURATION_BOUNDS, SECRET_KEYS, Config, Owner
from bot.core.durations import parse_duration
from bot.core.errors import ConfigError
from bot.core.models import DmPolicy, UnpairedResponse
from bot.core.platforms import KNOWN_PROVIDERS, TelegramConfig
from bot.runtime.config import _env_refs, _explain, _interpolate, load_config
from bot.services.nodes import NodeSettings
from bot.services.pairing import PairingSettings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"
LITERAL_TOKEN = "123456789:AAHliteralTokenValueThatMustNotBeLogged_xyz"
STRONG_TOKEN = "Zq3kR9vX2mW7pL4tN8bY1cH6dF5gJ0sA-uE_iOw"
TG = "providers:\n  telegram:\n    token: ${TG_TOKEN}\n"


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a config file; ``TG_TOKEN`` is set so the telegram block can reference it."""
    monkeypatch.setenv("TG_TOKEN", "env-token")

    def write(text: str, name: str = "pairbot.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


# --- the example file ------------------------------------------------------------------------


def test_example_config_loads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    values = yaml.safe_load(EXAMPLE.read_text())
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", repr(values)))
    assert referenced == {"PAIRBOT_OPERATOR_TOKEN", "TELEGRAM_BOT_TOKEN"}
    monkeypatch.setenv("PAIRBOT_OPERATOR_TOKEN", STRONG_TOKEN)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:bot-secret")
    caplog.set_level(logging.WARNING, logger="bot.runtime.config")
    config = load_config(EXAMPLE)
    assert config.owners == [Owner(provider="telegram", user_id="111111111")]
    assert (
        config.pairing.pending_ttl,
        config.pairing.prune_interval,
        config.pairing.max_pending_per_provider,
        config.pairing.resend_after,
    ) == (timedelta(hours=1), timedelta(minutes=5), 3, timedelta(minutes=10))
    assert config.nodes.pending_ttl == timedelta(minutes=5)
    assert (
        config.gateway.enabled,
        config.gateway.host,
        config.gateway.port,
        config.gateway.operator_token,
    ) == (True, "127.0.0.1", 18789, STRONG_TOKEN)
    assert (
        config.handler.kind,
        config.handler.url,
        config.handler.target,
        config.handler.timeout,
    ) == ("echo", None, None, timedelta(seconds=10))
    telegram = config.providers.telegram
    assert isinstance(telegram, TelegramConfig)
    assert (telegram.token, telegram.dm_policy, telegram.allow_from, telegram.api_base_url) == (
        "123:bot-secret",
        DmPolicy.PAIRING,
        [],
        None,
    )
    assert config.static_allow() == {"telegram": []}
    assert caplog.records == []  # the example keeps its secrets in the environment


def key_paths(raw: Any, model: type[BaseModel], prefix: str = "") -> list[tuple[str, bool]]:
    """Each key of ``raw`` with whether ``model`` (walked alongside) declares it."""
    found: list[tuple[str, bool]] = []
    for key, value in raw.items():
        where = f"{prefix}{key}"
        field = model.model_fields.get(key)
        found.append((where, field is not None))
        if field is None:
            continue
        inner = [
            a
            for a in (field.annotation, *getattr(field.annotation, "__args__", ()))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if isinstance(value, dict) and inner:
            found += key_paths(value, inner[0], f"{where}.")
        if isinstance(value, list) and key == "owners":
            for item in value:
                found += key_paths(item, Owner, f"{where}[].")
    return found


def test_every_key_in_the_example_is_a_real_field() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    paths = key_paths(raw, Config)
    assert [where for where, known in paths if not known] == []
    # The walk really went deep: every section and leaf of the example was checked.
    assert {
        "state_dir",
        "store.backend",
        "owners[].provider",
        "owners[].user_id",
        "pairing.resend_after",
        "nodes.pending_ttl",
        "gateway.operator_token",
        "handler.timeout",
        "providers.telegram.api_base_url",
    } <= {p for p, _ in paths}


def model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of ``model``, nested models walked (owners as ``owners[].x``)."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        where = f"{prefix}{name}"
        found.add(where)
        if name == "owners":
            found |= model_paths(Owner, f"{where}[].")
            continue
        for inner in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                found |= model_paths(inner, f"{where}.")
    return found


def full_example() -> Any:
    """The example with its commented-out provider blocks (``#|``) switched on."""
    return yaml.safe_load(EXAMPLE.read_text().replace("\n#|", "\n"))


def test_commented_provider_blocks_are_valid(monkeypatch) -> None:
    example = full_example()
    for name in _env_refs(example):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    monkeypatch.setenv("PAIRBOT_DATABASE_URL", "postgresql://pairbot@db:5432/pairbot")
    monkeypatch.setenv("PAIRBOT_EVENTS_SECRET", STRONG_TOKEN)
    config = Config.model_validate(_interpolate(example, "", "example"))
    assert list(config.static_allow()) == list(KNOWN_PROVIDERS)
    assert config.events is not None


def test_example_documents_every_field() -> None:
    raw = full_example()
    assert sorted(model_paths(Config) - {p for p, _ in key_paths(raw, Config)}) == []


def test_empty_file_gives_the_defaults(write) -> None:
    assert load_config(write("")) == Config()
    assert load_config(write("# only a comment\n")) == Config()


# --- ${VAR} interpolation --------------------------------------------------------------------


def test_interpolation_reads_the_environment(write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_HOME", "/srv/pb")
    monkeypatch.setenv("PB_OWNER", "555")
    monkeypatch.setenv("PB_HOST", "10.0.0.1")
    monkeypatch.setenv("PB_PORT", "9000")
    config = load_config(
        write(
            "state_dir: ${PB_HOME}/state\n"
            "owners: [{provider: telegram, user_id: '${PB_OWNER}'}]\n"
            "gateway: {host: '${PB_HOST}', port: '${PB_PORT}', tls: auto}\n" + TG
        )
    )
    assert config.state_dir == "/srv/pb/state"
    assert config.owners == [Owner(provider="telegram", user_id="555")]
    assert (config.gateway.host, config.gateway.port) == ("10.0.0.1", 9000)
    assert isinstance(config.providers.telegram, TelegramConfig)
    assert config.providers.telegram.token == "env-token"


def test_two_variables_in_one_string(write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_A", "a")
    monkeypatch.setenv("PB_B", "b")
    assert load_config(write("state_dir: /${PB_A}/${PB_B}/x\n")).state_dir == "/a/b/x"


@pytest.mark.parametrize(
    ("text", "field_name"),
    [
        ("providers:\n  telegram:\n    token: ${PB_MISSING}\n", "providers.telegram.token"),
        ("state_dir: ${PB_MISSING}/x\n", "state_dir"),
        ("owners: [{provider: telegram, user_id: '${PB_MISSING}'}]\n", "owners.0.user_id"),
        ("gateway: {operator_token: '${PB_MISSING}'}\n", "gateway.operator_token"),
    ],
    ids=["token", "state-dir", "owner-in-list", "operator-token"],
)
def test_missing_variable_names_field_and_variable(write, text: str, field_name: str) -> None:
    assert config_error(write(text)) == (
        f"{field_name}: environment variable PB_MISSING is not set"
    )


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172_800),
        ("1w", 604_800),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("10 s", 10),
        ("45", 45),
        (30, 30),
        (1.5, 1.5),
    ],
    ids=[
        "90s",
        "5m",
        "1h",
        "2d",
        "1w",
        "ms",
        "fraction",
        "space",
        "string-number",
        "int",
        "float",
    ],
)
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == timedelta(seconds=seconds)


def test_a_duration_in_a_file(write) -> None:
    config = load_config(write("pairing: {pending_ttl: '1.5h', resend_after: 90}\n"))
    assert (config.pairing.pending_ttl, config.pairing.resend_after) == (
        timedelta(hours=1, minutes=30),
        timedelta(seconds=90),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be longer than zero"),
        ("0s", "must be longer than zero"),
        ("-5", "must be longer than zero"),
        ("'-5s'", "not a duration: '-5s' (use e.g. 90s, 5m, 1h)"),
        ("5 minutes", "not a duration: '5 minutes' (use e.g. 90s, 5m, 1h)"),
        ("1y", "not a duration: '1y' (use e.g. 90s, 5m, 1h)"),
        ("abc", "not a duration: 'abc' (use e.g. 90s, 5m, 1h)"),
        ("true", "not a duration: True (use e.g. 90s, 5m, 1h)"),
        ("[1]", "not a duration: [1] (use e.g. 90s, 5m, 1h)"),
        ("null", "not a duration: None (use e.g. 90s, 5m, 1h)"),
        (".inf", "not a duration: inf (use e.g. 90s, 5m, 1h)"),
        (".nan", "not a duration: nan (use e.g. 90s, 5m, 1h)"),
        ("99999999999999d", "too long: '99999999999999d'"),
    ],
    ids=[
        "zero",
        "zero-s",
        "negative",
        "negative-s",
        "words",
        "years",
        "letters",
        "bool",
        "list",
        "null",
        "inf",
        "nan",
        "overflow",
    ],
)
def test_bad_durations(write, value: str, message: str) -> None:
    assert config_error(write(f"handler: {{timeout: {value}}}\n")) == (
        f"handler.timeout: {message}"
    )


BOUNDS = [
    ("pairing.pending_ttl", "1m", "30d", "59s", "31d"),
    ("pairing.prune_interval", "1s", "1d", "1ms", "25h"),
    ("pairing.resend_after", "10s", "1d", "9s", "2d"),
    ("nodes.pending_ttl", "10s", "1d", "1s", "2d"),
    ("nodes.invite_ttl", "1m", "1d", "59s", "25h"),
    ("handler.timeout", "100ms", "5m", "99ms", "301s"),
    ("gateway.handshake_timeout", "1s", "5m", "999ms", "301s"),
    ("gateway.idle_timeout", "5s", "1d", "4s", "25h"),
]


def section(field: str, value: str) -> str:
    block, key = field.split(".")
    extra = ", pending_ttl: 30d" if field == "pairing.resend_after" else ""
    return f"{block}: {{{key}: '{value}'{extra}}}\n"


@pytest.mark.parametrize(
    ("field", "low", "high", "under", "over"), BOUNDS, ids=[b[0] for b in BOUNDS]
)
def test_durations_are_bounded(
    write, field: str, low: str, high: str, under: str, over: str
) -> None:
    block, key = field.split(".")
    for inside in (low, high):
        config = load_config(write(section(field, inside)))
        assert getattr(getattr(config, block), key) == parse_duration(inside)
    for outside in (under, over):
        assert config_error(write(section(field, outside))) == (
            f"{field}: must be from {low} to {high}"
        )


def test_the_bounds_table_is_what_is_tested_and_holds_the_defaults() -> None:
    assert {k: (v[0], v[1]) for k, v in DURATION_BOUNDS.items()} == {
        b[0]: (parse_duration(b[1]), parse_duration(b[2])) for b in BOUNDS
    }
    defaults = Config()
    for field, (low, high) in DURATION_BOUNDS.items():
        block, key = field.split(".")
        assert low <= getattr(getattr(defaults, block), key) <= high, field


def test_the_example_documents_each_bound() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for field, low, high, _, _ in BOUNDS:
        block, key = field.split(".")
        start = (
            lines.index(f"{block}:")
            if f"{block}:" in lines
            else next(i for i, line in enumerate(lines) if line.startswith(f"{block}:"))
        )
        line = next(line for line in lines[start:] if line.strip().startswith(f"{key}:"))
        assert f"({low}..{high})" in line, line


def test_a_millisecond_pruner_is_refused(write) -> None:
    assert config_error(write("pairing: {prune_interval: 1ms}\n")) == (
        "pairing.prune_interval: must be from 1s to 1d"
    )


def test_resend_after_may_not_outlast_the_code(write) -> None:
    assert config_error(write("pairing: {pending_ttl: 5m, resend_after: 10m}\n")) == (
        "pairing.resend_after: must not be longer than pairing.pending_ttl (the code would "
        "expire before it is sent again)"
    )
    assert config_error(write("pairing: {resend_after: 2h}\n")).startswith(
        "pairing.resend_after: must not be longer than pairing.pending_ttl"
    )
    equal = load_config(write("pairing: {pending_ttl: 5m, resend_after: 5m}\n"))
    assert equal.pairing.resend_after == timedelta(minutes=5)


def test_a_short_pending_ttl_with_the_default_resend_after_is_fine(write) -> None:
    config = load_config(write("pairing: {pending_ttl: 5m}\n"))
    assert config.pairing.resend_after == timedelta(minutes=10)  # never resent: it expires first


def test_trusted_code_may_go_outside_the_bounds() -> None:
    raw = {"pairing": {"prune_interval": "0.2s", "pending_ttl": "4s"}}
    with pytest.raises(ValueError, match="must be from 1s to 1d"):
        Config.model_validate(raw)
    config = Config.with_any_durations(raw)
    assert (config.pairing.prune_interval, config.pairing.pending_ttl) == (
        timedelta(seconds=0.2),
        timedelta(seconds=4),
    )
    with pytest.raises(ValueError, match="must be longer than zero"):
        Config.with_any_durations({"handler": {"timeout": 0}})
    with pytest.raises(ValueError, match=r"must not be longer than pairing\.pending_ttl"):
        Config.with_any_durations({"pairing": {"pending_ttl": "4s", "resend_after": "5s"}})


# --- everything else that can be wrong: one line, path first, field named ---------------------

BAD = [
    ("unknown-top", "colour: red\n", "colour: unknown key"),
    ("unknown-nested", "pairing: {pending_tll: 1h}\n", "pairing.pending_tll: unknown key"),
    (
        "unknown-provider-key",
        "providers:\n  telegram: {token: x, dm_polcy: open}\n",
        "providers.telegram.dm_polcy: unknown key",
    ),
    ("unknown-provider", "providers: {myspace: {token: x}}\n", "providers.myspace: unknown key"),
    (
        "dm-policy",
        "providers:\n  telegram: {token: x, dm_policy: friends}\n",
        "providers.telegram.dm_policy: Input should be 'pairing', 'allowlist', 'open' or "
        "'disabled'",
    ),
    (
        "owner-username",
        "owners: [{provider: telegram, user_id: '@alice'}]\n",
        "owners.0.user_id: must be the platform's immutable user id, not a @username",
    ),
    (
        "owner-username-spaced",
        "owners: [{provider: telegram, user_id: ' @alice'}]\n",
        "owners.0.user_id: must be the platform's immutable user id, not a @username",
    ),
    (
        "owner-signal-number",
        "owners: [{provider: signal, user_id: '+15550001111'}]\n",
        "owners.0.user_id: '+15550001111' is not a Signal account UUID (ACI) (names, usernames "
        "and phone numbers can change hands)",
    ),
    (
        "owner-display-name",
        "owners: [{provider: telegram, user_id: Alice}]\n",
        "owners.0.user_id: 'Alice' is not a numeric Telegram user id (names, usernames and "
        "phone numbers can change hands)",
    ),
    (
        "owner-empty",
        "owners: [{provider: telegram, user_id: ''}]\n",
        "owners.0.user_id: must be the platform's immutable user id, not a @username",
    ),
    (
        "owner-null",
        "owners: [{provider: telegram, user_id: null}]\n",
        "owners.0.user_id: must be the platform's immutable user id (a string or number)",
    ),
    ("owner-missing-id", "owners: [{provider: telegram}]\n", "owners.0.user_id: Field required"),
    (
        "owner-provider",
        "owners: [{provider: myspace, user_id: '1'}]\n",
        "owners.0.provider: unknown provider 'myspace'",
    ),
    (
        "owners-not-list",
        "owners: {provider: telegram, user_id: '1'}\n",
        "owners: Input should be a valid list",
    ),
    (
        "allow-username",
        "providers:\n  telegram: {token: x, allow_from: ['@bob']}\n",
        "providers.telegram.allow_from: '@bob' is not a numeric Telegram user id (usernames can "
        "change hands)",
    ),
    (
        "allow-name",
        "providers:\n  telegram: {token: x, allow_from: [123, bob]}\n",
        "providers.telegram.allow_from: 'bob' is not a numeric Telegram user id (usernames can "
        "change hands)",
    ),
    (
        "allow-scalar",
        "providers:\n  telegram: {token: x, allow_from: '12345'}\n",
        "providers.telegram.allow_from: must be a list of numeric Telegram user ids, e.g. "
        "[123456789]",
    ),
    (
        "allow-int",
        "providers:\n  telegram: {token: x, allow_from: 12345}\n",
        "providers.telegram.allow_from: must be a list of numeric Telegram user ids, e.g. "
        "[123456789]",
    ),
    (
        "owner-telegram-group-chat-id",
        "owners: [{provider: telegram, user_id: -1001234567}]\n",
        "owners.0.user_id: '-1001234567' is not a numeric Telegram user id (names, "
        "usernames and phone numbers can change hands)",
    ),
    (
        "owner-telegram-phone",
        "owners: [{provider: telegram, user_id: '+15550100001'}]\n",
        "owners.0.user_id: '+15550100001' is not a numeric Telegram user id (names, "
        "usernames and phone numbers can change hands)",
    ),
    (
        "owner-imessage-national-number",
        "owners: [{provider: imessage, user_id: '5550100001'}]\n",
        "owners.0.user_id: '5550100001' is not an iMessage handle (+E.164 number or email) "
        "(names, usernames and phone numbers can change hands)",
    ),
    (
        "allow-telegram-group-chat-id",
        "providers:\n  telegram: {token: x, allow_from: [42, -100789]}\n",
        "providers.telegram.allow_from: '-100789' is not a numeric Telegram user id "
        "(usernames can change hands)",
    ),
    (
        "allow-signal-phone",
        "providers:\n  signal: {account: '+15550000000', allow_from: [' +1 555 010 0001 ']}\n",
        "providers.signal.allow_from: '+1 555 010 0001' is not a Signal account UUID (ACI), "
        "not a phone number",
    ),
    (
        "token-missing",
        "providers:\n  telegram: {dm_policy: open}\n",
        "providers.telegram.token: Field required",
    ),
    (
        "handler-kind",
        "handler: {kind: shell}\n",
        "handler.kind: Input should be 'echo', 'forward', 'webhook' or 'python'",
    ),
    (
        "port",
        "gateway: {port: 70000}\n",
        "gateway.port: Input should be less than or equal to 65535",
    ),
    (
        "cap-zero",
        "pairing: {max_pending_per_provider: 0}\n",
        "pairing.max_pending_per_provider: Input should be greater than or equal to 1",
    ),
    (
        "backend",
        "store: {backend: redis}\n",
        "store.backend: Input should be 'json', 'sqlite' or 'postgres'",
    ),
    (
        "yaml-indent",
        "a: b\n  c: d\n",
        "not valid YAML: mapping values are not allowed here (line 2, column 4)",
    ),
    (
        "yaml-unclosed",
        "owners: [\n",
        "not valid YAML: expected the node content, but found '<stream end>' (line 2, column 1)",
    ),
    (
        "yaml-tab",
        "\tkey: 1\n",
        "not valid YAML: found character '\\t' that cannot start any token (line 1, column 1)",
    ),
    ("yaml-deep", "owners: " + "[" * 100_000 + "\n", "nested too deeply to be a config"),
    (
        "yaml-deep-closed",
        "owners: " + "[" * 5000 + "]" * 5000 + "\n",
        "nested too deeply to be a config",
    ),
    ("top-list", "- a\n- b\n", "top level must be a mapping of keys"),
    ("top-scalar", "just text\n", "top level must be a mapping of keys"),
    ("top-number", "42\n", "top level must be a mapping of keys"),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in BAD], ids=[i for i, _, _ in BAD]
)
def test_bad_config_is_one_line_naming_file_and_field(write, text: str, message: str) -> None:
    assert config_error(write(text)) == message


def test_missing_file(tmp_path: Path) -> None:
    assert config_error(tmp_path / "nope.yaml") == "file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert config_error(tmp_path) == "cannot be read: Is a directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"state_dir: /tmp/caf\xe9\n")
    assert config_error(path) == "not UTF-8 text"


def test_allow_from_numbers_become_strings(write) -> None:
    config = load_config(
        write("providers:\n  telegram: {token: x, allow_from: [123, '456', ' 100789 ']}\n")
    )
    assert config.static_allow() == {"telegram": ["123", "456", "100789"]}


def test_numeric_owner_id_becomes_a_string(write) -> None:
    config = load_config(write("owners: [{provider: telegram, user_id: 111111111}]\n"))
    assert config.owners == [Owner(provider="telegram", user_id="111111111")]


# --- a literal secret in the file ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field_name"),
    [
        (f"providers:\n  telegram:\n    token: '{LITERAL_TOKEN}'\n", "providers.telegram.token"),
        (f"gateway: {{operator_token: '{LITERAL_TOKEN}'}}\n", "gateway.operator_token"),
        (f"events: {{url: 'https://x.test/h', secret: '{LITERAL_TOKEN}'}}\n", "events.secret"),
    ],
    ids=["bot-token", "operator-token", "events-secret"],
)
def test_literal_secret_warns_without_the_value(
    write, caplog: pytest.LogCaptureFixture, text: str, field_name: str
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.runtime.config")
    path = write(text)
    load_config(path)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"{path}: {field_name} holds a literal secret; use ${{ENV_VAR}} instead")
    ]
    assert LITERAL_TOKEN not in caplog.text
    assert "AAHliteral" not in caplog.text


def test_the_secret_keys_are_the_fields_marked_secret() -> None:
    marked = set(SECRET_KEYS)
    assert marked == {
        "token",
        "bot_token",
        "app_token",
        "signing_secret",
        "access_token",
        "app_secret",
        "verify_token",
        "password",
        "operator_token",
        "secret_token",
        "secret",
    }


def test_secret_from_environment_does_not_warn(write, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.runtime.config")
    load_config(write(TG))
    assert caplog.records == []


def test_a_partial_webhook_block_keeps_the_platforms_defaults() -> None:
    config = Config.model_validate(
        {
            "providers": {
                "imessage": {
                    "server_url": "http://127.0.0.1:1234",
                    "password": "pw",
                    "webhook": {"port": 0},
                }
            }
        }
    )
    block = config.providers.imessage
    assert block is not None
    assert block.provider_kwargs()["webhook"].path == "/bluebubbles/webhook"
    assert block.provider_kwargs()["webhook"].port == 0


def test_the_services_take_every_knob_of_their_section_and_its_defaults() -> None:
    config = Config.model_validate(
        {
            "pairing": {
                "pending_ttl": "2h",
                "prune_interval": "1m",
                "max_pending_per_provider": 7,
                "resend_after": "20m",
                "hold_messages": 4,
                "notice_preview": True,
            },
            "nodes": {
                "pending_ttl": "2m",
                "max_pending_per_address": 1,
                "max_pending": 9,
                "max_pending_per_node": 2,
            },
        }
    )
    assert PairingSettings.of(config.pairing) == PairingSettings(
        pending_ttl=timedelta(hours=2),
        resend_after=timedelta(minutes=20),
        max_pending_per_provider=7,
        hold_messages=4,
    )
    assert NodeSettings.of(config.nodes) == NodeSettings(
        pending_ttl=timedelta(minutes=2),
        max_pending_per_address=1,
        max_pending=9,
        max_pending_per_node=2,
    )
    # A service made without a config has the knobs an empty config section gives.
    assert PairingSettings.of(Config().pairing) == PairingSettings()
    assert NodeSettings.of(Config().nodes) == NodeSettings()


# --- how strangers are answered, held messages -------------------------------------------------


@pytest.mark.parametrize("mode", list(UnpairedResponse))
def test_each_provider_says_how_it_answers_strangers(write, mode: UnpairedResponse) -> None:
    text = f"{TG}    unpaired_response: {mode.value}\n"
    if mode is UnpairedResponse.CUSTOM:
        text += (
            "messages:\n  stranger: 'Ask the owner about {code} ({ttl}, {provider} {sender_id})'\n"
        )
    config = load_config(write(text))
    block = config.providers.telegram
    assert block is not None
    assert block.unpaired_response is mode
    assert "unpaired_response" not in block.provider_kwargs()
    [(name, reply)] = config.stranger_replies().items()
    assert (name, reply.mode) == ("telegram", mode)


def test_strangers_get_their_code_unless_the_config_says_otherwise(write) -> None:
    config = load_config(write(TG))
    assert config.stranger_replies()["telegram"].mode is UnpairedResponse.CODE
    assert (config.pairing.hold_messages, config.pairing.notice_preview) == (0, False)


KNOWN = "{code}, {ttl}, {sender_id}, {provider}"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (
            "Hi {name}",
            "unknown placeholder {name} (known: {code}, {ttl}, {sender_id}, {provider})",
        ),
        ("Hi {}", "unknown placeholder {} (known: {code}, {ttl}, {sender_id}, {provider})"),
        ("Hi {code.upper}", "unknown placeholder {code.upper} (known:"),
        ("Hi {code!r}", "placeholder {code} takes no format or conversion"),
        ("Hi {ttl:>9}", "placeholder {ttl} takes no format or conversion"),
        ("Hi {code", "not a template: expected '}' before end of string"),
        ("Hi } there", "not a template: Single '}' encountered in format string"),
        ("", "String should have at least 1 character"),
    ],
    ids=[
        "unknown",
        "empty-name",
        "attribute",
        "conversion",
        "spec",
        "open",
        "lone-close",
        "empty",
    ],
)
def test_a_bad_stranger_text_is_an_error_naming_the_field(
    write, template: str, problem: str
) -> None:
    text = f"{TG}    unpaired_response: custom\nmessages:\n  stranger: '{template}'\n"
    message = config_error(write(text))
    assert message.startswith(f"messages.stranger: {problem}")


def test_braces_are_written_twice_in_the_stranger_text(write) -> None:
    text = f"{TG}    unpaired_response: custom\nmessages:\n  stranger: '{{{{ {{code}} }}}}'\n"
    assert load_config(write(text)).messages.stranger == "{{ {code} }}"


def test_custom_without_a_stranger_text_names_the_provider_field(write) -> None:
    message = config_error(write(f"{TG}    unpaired_response: custom\n"))
    assert message == (
        "providers.telegram.unpaired_response: custom needs messages.stranger (the text "
        "strangers are sent)"
    )


def test_a_stranger_text_no_provider_uses_is_an_error(write) -> None:
    message = config_error(write(f"{TG}messages:\n  stranger: 'Code: {{code}}'\n"))
    assert message == (
        "messages.stranger: no provider uses it: set unpaired_response: custom in a "
        "providers block"
    )


def test_an_unknown_answer_is_an_error_naming_the_field(write) -> None:
    message = config_error(write(f"{TG}    unpaired_response: quiet\n"))
    assert message.startswith("providers.telegram.unpaired_response: Input should be 'code'")


@pytest.mark.parametrize(
    ("pairing", "problem"),
    [
        ("hold_messages: -1", "pairing.hold_messages: Input should be greater than or equal to 0"),
        ("hold_messages: 21", "pairing.hold_messages: Input should be less than or equal to 20"),
        (
            "notice_preview: true",
            "pairing.notice_preview: shows the first message held: set pairing.hold_messages "
            "to 1 or more",
        ),
    ],
    ids=["negative", "too-many", "preview-of-nothing"],
)
def test_held_message_knobs_out_of_range_are_errors(write, pairing: str, problem: str) -> None:
    assert config_error(write(f"pairing: {{{pairing}}}\n")) == problem


def test_held_messages_and_their_preview(write) -> None:
    config = load_config(write("pairing: {hold_messages: 20, notice_preview: true}\n"))
    assert (config.pairing.hold_messages, config.pairing.notice_preview) == (20, True)


# --- the operator token must be strong --------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["1", "password", "a" * 64, "abc" * 30, "operator-secret", "hunter2hunter2"],
    ids=["one", "password", "64-a", "abc-repeated", "short-phrase", "phrase-twice"],
)
def test_weak_operator_token_is_refused_without_echoing_it(write, token: str) -> None:
    message = config_error(write(f"gateway: {{operator_token: '{token}'}}\n"))
    assert message.startswith("gateway.operator_token: too weak (")
    assert "at least 128 bits" in message
    assert "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'" in message
    if len(token) > 1:
        assert token not in message


def test_strong_or_no_operator_token_is_accepted(write) -> None:
    assert (
        load_config(
            write(f"gateway: {{operator_token: '{STRONG_TOKEN}'}}\n")
        ).gateway.operator_token
        == STRONG_TOKEN
    )
    assert load_config(write("gateway: {operator_token: null}\n")).gateway.operator_token is None


# --- a value from ${VAR} is never echoed -------------------------------------------------------

ENV_SECRET = "sk_live_4f9a2b7c"

FROM_ENV = [
    (
        "owner-id",
        "owners: [{provider: telegram, user_id: '${PB_SECRET}'}]\n",
        "owners.0.user_id: the value from ${PB_SECRET} is not a numeric Telegram user id (names, "
        "usernames and phone numbers can change hands)",
    ),
    (
        "owner-id-partly",
        "owners: [{provider: discord, user_id: '42${PB_SECRET}'}]\n",
        "owners.0.user_id: the value from ${PB_SECRET} is not a numeric Discord user id (a "
        "snowflake) (names, usernames and phone numbers can change hands)",
    ),
    (
        "provider-block-wrong-type",
        "providers: {telegram: '${PB_SECRET}'}\n",
        "providers.telegram: Input should be a valid dictionary or instance of TelegramConfig "
        "(the value from ${PB_SECRET})",
    ),
    (
        "provider-number",
        "providers:\n  telegram: {token: x, max_send_rate: '${PB_SECRET}'}\n",
        "providers.telegram.max_send_rate: Input should be a valid number, unable to parse string "
        "as a number (the value from ${PB_SECRET})",
    ),
    (
        "port",
        "gateway: {port: '${PB_SECRET}'}\n",
        "gateway.port: Input should be a valid integer, unable to parse string as an integer "
        "(the value from ${PB_SECRET})",
    ),
    (
        "operator-token",
        "gateway: {operator_token: '${PB_SECRET}'}\n",
        "gateway.operator_token: too weak (about 84 bits; at least 128 bits of randomness "
        "needed): make one with python3 -c 'import secrets; print(secrets.token_urlsafe(32))', "
        "or set null to turn remote operators off (the value from ${PB_SECRET})",
    ),
    (
        "duration",
        "pairing: {pending_ttl: '${PB_SECRET}'}\n",
        "pairing.pending_ttl: not a duration: the value from ${PB_SECRET} (use e.g. 90s, 5m, 1h)",
    ),
    (
        "allow-from",
        "providers:\n  telegram: {token: x, allow_from: [1, '${PB_SECRET}']}\n",
        "providers.telegram.allow_from: the value from ${PB_SECRET} is not a numeric Telegram "
        "user id (usernames can change hands)",
    ),
    (
        "slack-allow-from",
        "providers:\n  slack: {bot_token: x, app_token: y, allow_from: ['${PB_SECRET}']}\n",
        "providers.slack.allow_from: the value from ${PB_SECRET} is not a Slack user id (U…), "
        "e.g. U012AB3CD",
    ),
    (
        "dm-policy",
        "providers:\n  telegram: {token: x, dm_policy: '${PB_SECRET}'}\n",
        "providers.telegram.dm_policy: Input should be 'pairing', 'allowlist', 'open' or "
        "'disabled' (the value from ${PB_SECRET})",
    ),
    (
        "two-variables",
        "owners: [{provider: telegram, user_id: '${PB_SECRET}${PB_OTHER}'}]\n",
        "owners.0.user_id: the value from ${PB_SECRET}, ${PB_OTHER} is not a numeric Telegram "
        "user id (names, usernames and phone numbers can change hands)",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in FROM_ENV], ids=[i for i, _, _ in FROM_ENV]
)
def test_an_error_names_the_variable_never_its_value(
    write, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.setenv("PB_SECRET", ENV_SECRET)
    monkeypatch.setenv("PB_OTHER", "zz_other_9q")
    got = config_error(write(text))
    assert ENV_SECRET not in got
    assert "4f9a2b" not in got
    assert "zz_other" not in got
    assert got == message


def test_a_variable_elsewhere_leaves_the_message_alone(
    write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_OWNER", "555")
    monkeypatch.setenv("PB_BOT", ENV_SECRET)
    assert (
        config_error(
            write(
                "owners: [{provider: telegram, user_id: '${PB_OWNER}'}]\ngateway: {port: 70000}\n"
            )
        )
        == "gateway.port: Input should be less than or equal to 65535"
    )
    assert config_error(write("providers:\n  slack: {bot_token: '${PB_BOT}', mode: http}\n")) == (
        "providers.slack: signing_secret is required when mode is http"
    )


def test_any_message_that_would_quote_an_environment_value_is_masked() -> None:
    """The backstop, for a message no template knows about (e.g. a future validator's)."""
    used = {"providers.telegram.token": {"PB_SECRET": ENV_SECRET}, "state_dir": {"PB_N": "1"}}
    error = {
        "loc": ("gateway", "host"),
        "type": "value_error",
        "input": 5,
        "msg": f"Value error, {ENV_SECRET!r} does not resolve, 1 try",
    }
    assert _explain(error, used) == ("gateway.host", "'${PB_SECRET}' does not resolve, 1 try")


# --- store: ----------------------------------------------------------------------------------


def test_the_store_backend_and_its_place(write) -> None:
    assert load_config(write("store: {backend: sqlite}\n")).store.path is None
    sqlite = load_config(write("store: {backend: sqlite, path: /srv/p.db}\n")).store
    assert (sqlite.backend, sqlite.path, sqlite.described()) == (
        "sqlite",
        "/srv/p.db",
        "sqlite (/srv/p.db)",
    )
    assert "store.backend" in config_error(write("store: {backend: redis}\n"))
    assert "needs store.dsn" in config_error(write("store: {backend: postgres}\n"))


def test_a_dsn_password_is_a_secret_never_shown(write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_URL", "postgresql://pairbot:p%40ss-w0rd@db:5432/pairbot")
    config = load_config(write("store:\n  backend: postgres\n  dsn: ${DB_URL}\n"))
    assert {"p%40ss-w0rd", "p@ss-w0rd"} <= set(config.secrets())
    assert config.store.described() == "postgres (postgresql://pairbot:***@db:5432/pairbot)"
    monkeypatch.setenv("DB_URL", "mysql pass: hunter2")
    message = config_error(write("store:\n  backend: postgres\n  dsn: ${DB_URL}\n"))
    assert "store.dsn" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:pw@h/d", "postgresql://u:***@h/d"),
        (
            "postgresql://u@h/d?password=pw&sslmode=require",
            "postgresql://u@h/d?password=***&sslmode=require",
        ),
        ("host=h user=u password='p w' dbname=d", "host=h user=u password=*** dbname=d"),
        ("postgresql://h/d", "postgresql://h/d"),
    ],
)
def test_redact_dsn(dsn: str, shown: str) -> None:
    from bot.core.config import redact_dsn

    assert redact_dsn(dsn) == shown


# --- metrics and events out ---------------------------------------------------------------------


def test_metrics_are_off_and_events_unset_by_default(write) -> None:
    config = load_config(write(TG))
    assert (config.metrics.enabled, config.metrics.port, config.events) == (False, None, None)


def test_metrics_on_the_gateways_port_need_the_gateway(write) -> None:
    message = config_error(write("gateway: {enabled: false}\nmetrics: {enabled: true}\n"))
    assert message.startswith("metrics: metrics.port is needed")
    config = load_config(
        write("gateway: {enabled: false}\nmetrics: {enabled: true, port: 9464}\n")
    )
    assert (config.metrics.enabled, config.metrics.host, config.metrics.port) == (
        True,
        "127.0.0.1",
        9464,
    )


def test_events_take_a_web_url_a_strong_secret_and_known_kinds(
    write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_EVENTS", STRONG_TOKEN)
    config = load_config(
        write("events: {url: 'https://hooks.test/p', secret: '${PB_EVENTS}', kinds: [approve]}\n")
    )
    assert config.events is not None
    assert (config.events.url, config.events.secret, config.events.kinds) == (
        "https://hooks.test/p",
        STRONG_TOKEN,
        ["approve"],
    )
    assert STRONG_TOKEN in config.secrets()  # the log redaction gets it
    assert "https://hooks.test/p" in config.secrets()  # a hook URL may carry a token
    secret = "secret: '${PB_EVENTS}'"
    for text, expected in [
        (f"events: {{url: 'ftp://hooks.test/p?token=hush', {secret}}}", "events.url: must be an"),
        (f"events: {{url: 'https:///p', {secret}}}", "events.url: must be an http"),
        ("events: {url: 'https://hooks.test/p', secret: 'hunter2hunter2'}", "events.secret: too"),
        ("events: {url: 'https://hooks.test/p'}", "events.secret: "),
        (f"events: {{url: 'https://h.test', {secret}, kinds: [approved]}}", "events.kinds: 'appr"),
    ]:
        message = config_error(write(text + "\n"))
        assert message.startswith(expected), message
        assert "hush" not in message
        assert "hunter2" not in message
    assert "known: request, approve, reject" in message


@pytest.mark.parametrize(
    ("gateway", "says"),
    [
        ("{public_url: 'https://pairbot.lan'}", "gateway.public_url: must be a ws:// or wss://"),
        ("{public_url: 'wss://'}", "gateway.public_url: must be a ws:// or wss://"),
        (
            "{tls: auto, public_url: 'ws://pairbot.lan:18789'}",
            "gateway: public_url: the gateway serves TLS",
        ),
    ],
    ids=["not-a-websocket", "no-host", "plain-beside-tls"],
)
def test_public_url_is_a_websocket_url_nodes_can_reach(write, gateway: str, says: str) -> None:
    assert config_error(write(f"gateway: {gateway}\n")).startswith(says)


def test_the_node_url_is_the_public_url_else_the_host_and_port() -> None:
    def url(**gateway: object) -> str:
        return Config.model_validate({"gateway": gateway}).gateway.node_url(18789)

    assert url() == "ws://127.0.0.1:18789"
    assert url(host="::1", tls="auto") == "wss://[::1]:18789"
    assert url(host="0.0.0.0", tls="auto", public_url="wss://pi.lan:1") == "wss://pi.lan:1"
    with pytest.raises(ConfigError, match=r"^gateway\.public_url: not set, and gateway\.host ::"):
        url(host="::", tls="auto")
