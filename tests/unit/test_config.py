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

from bot.config import Config, Owner, _interpolate, load_config
from bot.errors import ConfigError
from bot.models import DmPolicy

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"
LITERAL_TOKEN = "123456789:AAHliteralTokenValueThatMustNotBeLogged_xyz"
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

def test_example_config_loads(monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    values = yaml.safe_load(EXAMPLE.read_text())
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", repr(values)))
    assert referenced == {"PAIRBOT_OPERATOR_TOKEN", "TELEGRAM_BOT_TOKEN"}
    monkeypatch.setenv("PAIRBOT_OPERATOR_TOKEN", "operator-secret")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:bot-secret")
    caplog.set_level(logging.WARNING, logger="bot.config")
    config = load_config(EXAMPLE)
    assert config.owners == [Owner(provider="telegram", user_id="111111111")]
    assert (config.pairing.pending_ttl, config.pairing.prune_interval,
            config.pairing.max_pending_per_provider, config.pairing.resend_after) == (
        timedelta(hours=1), timedelta(minutes=5), 3, timedelta(minutes=10))
    assert config.nodes.pending_ttl == timedelta(minutes=5)
    assert (config.gateway.enabled, config.gateway.host, config.gateway.port,
            config.gateway.operator_token) == (True, "127.0.0.1", 18789, "operator-secret")
    assert (config.handler.kind, config.handler.url, config.handler.target,
            config.handler.timeout) == ("echo", None, None, timedelta(seconds=10))
    telegram = config.providers.telegram
    assert telegram is not None
    assert (telegram.token, telegram.dm_policy, telegram.allow_from,
            telegram.api_base_url) == ("123:bot-secret", DmPolicy.PAIRING, [], None)
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
        inner = [a for a in (field.annotation, *getattr(field.annotation, "__args__", ()))
                 if isinstance(a, type) and issubclass(a, BaseModel)]
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
    assert {"state_dir", "store.backend", "owners[].provider", "owners[].user_id",
            "pairing.resend_after", "nodes.pending_ttl", "gateway.operator_token",
            "handler.timeout", "providers.telegram.api_base_url"} <= {p for p, _ in paths}


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
    for name in ("TELEGRAM_BOT_TOKEN", "PAIRBOT_OPERATOR_TOKEN", "SLACK_BOT_TOKEN",
                 "SLACK_APP_TOKEN", "DISCORD_BOT_TOKEN", "WHATSAPP_ACCESS_TOKEN",
                 "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "BLUEBUBBLES_PASSWORD"):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    config = Config.model_validate(_interpolate(full_example(), "", "example"))
    assert sorted(config.static_allow()) == ["discord", "imessage", "signal", "slack",
                                             "telegram", "whatsapp"]


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
    config = load_config(write(
        "state_dir: ${PB_HOME}/state\n"
        "owners: [{provider: telegram, user_id: '${PB_OWNER}'}]\n"
        "gateway: {host: '${PB_HOST}', port: '${PB_PORT}'}\n" + TG))
    assert config.state_dir == "/srv/pb/state"
    assert config.owners == [Owner(provider="telegram", user_id="555")]
    assert (config.gateway.host, config.gateway.port) == ("10.0.0.1", 9000)
    assert config.providers.telegram is not None
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
        f"{field_name}: environment variable PB_MISSING is not set")


# --- durations -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("written", "seconds"),
    [("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172_800), ("250ms", 0.25), ("1.5h", 5400),
     ("10 s", 10), ("45", 45), (30, 30), (1.5, 1.5)],
    ids=["90s", "5m", "1h", "2d", "ms", "fraction", "space", "string-number", "int", "float"],
)
def test_durations(write, written: object, seconds: float) -> None:
    value = f"'{written}'" if isinstance(written, str) else str(written)
    config = load_config(write(f"pairing: {{pending_ttl: {value}}}\n"))
    assert config.pairing.pending_ttl == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be longer than zero"),
        ("0s", "must be longer than zero"),
        ("-5", "must be longer than zero"),
        ("'-5s'", "not a duration: '-5s' (use e.g. 90s, 5m, 1h)"),
        ("5 minutes", "not a duration: '5 minutes' (use e.g. 90s, 5m, 1h)"),
        ("1w", "not a duration: '1w' (use e.g. 90s, 5m, 1h)"),
        ("abc", "not a duration: 'abc' (use e.g. 90s, 5m, 1h)"),
        ("true", "not a duration: True (use e.g. 90s, 5m, 1h)"),
        ("[1]", "not a duration: [1] (use e.g. 90s, 5m, 1h)"),
        ("null", "not a duration: None (use e.g. 90s, 5m, 1h)"),
        (".inf", "not a duration: inf (use e.g. 90s, 5m, 1h)"),
        (".nan", "not a duration: nan (use e.g. 90s, 5m, 1h)"),
        ("99999999999999d", "too long: '99999999999999d'"),
    ],
    ids=["zero", "zero-s", "negative", "negative-s", "words", "weeks", "letters", "bool",
         "list", "null", "inf", "nan", "overflow"],
)
def test_bad_durations(write, value: str, message: str) -> None:
    assert config_error(write(f"handler: {{timeout: {value}}}\n")) == (
        f"handler.timeout: {message}")


# --- everything else that can be wrong: one line, path first, field named ---------------------

BAD = [
    ("unknown-top", "colour: red\n", "colour: unknown key"),
    ("unknown-nested", "pairing: {pending_tll: 1h}\n", "pairing.pending_tll: unknown key"),
    ("unknown-provider-key", "providers:\n  telegram: {token: x, dm_polcy: open}\n",
     "providers.telegram.dm_polcy: unknown key"),
    ("unknown-provider", "providers: {myspace: {token: x}}\n", "providers.myspace: unknown key"),
    ("dm-policy", "providers:\n  telegram: {token: x, dm_policy: friends}\n",
     "providers.telegram.dm_policy: Input should be 'pairing', 'allowlist', 'open' or "
     "'disabled'"),
    ("owner-username", "owners: [{provider: telegram, user_id: '@alice'}]\n",
     "owners.0.user_id: must be the platform's immutable user id, not a @username"),
    ("owner-username-spaced", "owners: [{provider: telegram, user_id: ' @alice'}]\n",
     "owners.0.user_id: must be the platform's immutable user id, not a @username"),
    ("owner-signal-number", "owners: [{provider: signal, user_id: '+15550001111'}]\n",
     "owners.0: user_id '+15550001111' is not a Signal account UUID (ACI) (names, usernames "
     "and phone numbers can change hands)"),
    ("owner-display-name", "owners: [{provider: telegram, user_id: Alice}]\n",
     "owners.0: user_id 'Alice' is not a numeric Telegram user id (names, usernames and "
     "phone numbers can change hands)"),
    ("owner-empty", "owners: [{provider: telegram, user_id: ''}]\n",
     "owners.0.user_id: must be the platform's immutable user id, not a @username"),
    ("owner-null", "owners: [{provider: telegram, user_id: null}]\n",
     "owners.0.user_id: must be the platform's immutable user id (a string or number)"),
    ("owner-missing-id", "owners: [{provider: telegram}]\n", "owners.0.user_id: Field required"),
    ("owner-provider", "owners: [{provider: myspace, user_id: '1'}]\n",
     "owners.0.provider: unknown provider 'myspace'"),
    ("owners-not-list", "owners: {provider: telegram, user_id: '1'}\n",
     "owners: Input should be a valid list"),
    ("allow-username", "providers:\n  telegram: {token: x, allow_from: ['@bob']}\n",
     "providers.telegram.allow_from: '@bob' is not a numeric Telegram user id (usernames can "
     "change hands)"),
    ("allow-name", "providers:\n  telegram: {token: x, allow_from: [123, bob]}\n",
     "providers.telegram.allow_from: 'bob' is not a numeric Telegram user id (usernames can "
     "change hands)"),
    ("allow-scalar", "providers:\n  telegram: {token: x, allow_from: '12345'}\n",
     "providers.telegram.allow_from: must be a list of numeric Telegram user ids, e.g. "
     "[123456789]"),
    ("allow-int", "providers:\n  telegram: {token: x, allow_from: 12345}\n",
     "providers.telegram.allow_from: must be a list of numeric Telegram user ids, e.g. "
     "[123456789]"),
    ("token-missing", "providers:\n  telegram: {dm_policy: open}\n",
     "providers.telegram.token: Field required"),
    ("handler-kind", "handler: {kind: shell}\n",
     "handler.kind: Input should be 'echo', 'forward', 'webhook' or 'python'"),
    ("port", "gateway: {port: 70000}\n", "gateway.port: Input should be less than or equal to "
     "65535"),
    ("cap-zero", "pairing: {max_pending_per_provider: 0}\n",
     "pairing.max_pending_per_provider: Input should be greater than or equal to 1"),
    ("backend", "store: {backend: sqlite}\n", "store.backend: Input should be 'json'"),
    ("yaml-indent", "a: b\n  c: d\n",
     "not valid YAML: mapping values are not allowed here (line 2, column 4)"),
    ("yaml-unclosed", "owners: [\n",
     "not valid YAML: expected the node content, but found '<stream end>' (line 2, column 1)"),
    ("yaml-tab", "\tkey: 1\n",
     "not valid YAML: found character '\\t' that cannot start any token (line 1, column 1)"),
    ("yaml-deep", "owners: " + "[" * 100_000 + "\n", "nested too deeply to be a config"),
    ("yaml-deep-closed", "owners: " + "[" * 5000 + "]" * 5000 + "\n",
     "nested too deeply to be a config"),
    ("top-list", "- a\n- b\n", "top level must be a mapping of keys"),
    ("top-scalar", "just text\n", "top level must be a mapping of keys"),
    ("top-number", "42\n", "top level must be a mapping of keys"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in BAD],
                         ids=[i for i, _, _ in BAD])
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
    config = load_config(write(
        "providers:\n  telegram: {token: x, allow_from: [123, '456', -100789]}\n"))
    assert config.static_allow() == {"telegram": ["123", "456", "-100789"]}


def test_numeric_owner_id_becomes_a_string(write) -> None:
    config = load_config(write("owners: [{provider: telegram, user_id: 111111111}]\n"))
    assert config.owners == [Owner(provider="telegram", user_id="111111111")]


# --- a literal secret in the file ------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "field_name"),
    [
        (f"providers:\n  telegram:\n    token: '{LITERAL_TOKEN}'\n", "providers.telegram.token"),
        (f"gateway: {{operator_token: '{LITERAL_TOKEN}'}}\n", "gateway.operator_token"),
    ],
    ids=["bot-token", "operator-token"],
)
def test_literal_secret_warns_without_the_value(write, caplog: pytest.LogCaptureFixture,
                                                text: str, field_name: str) -> None:
    caplog.set_level(logging.WARNING, logger="bot.config")
    path = write(text)
    load_config(path)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING,
         f"{path}: {field_name} holds a literal secret; use ${{ENV_VAR}} instead")]
    assert LITERAL_TOKEN not in caplog.text
    assert "AAHliteral" not in caplog.text


def test_secret_from_environment_does_not_warn(write, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.config")
    load_config(write(TG))
    assert caplog.records == []


def test_a_partial_webhook_block_keeps_the_platforms_defaults() -> None:
    config = Config.model_validate({"providers": {"imessage": {
        "server_url": "http://127.0.0.1:1234", "password": "pw", "webhook": {"port": 0}}}})
    block = config.providers.imessage
    assert block is not None
    assert block.provider_kwargs()["webhook_path"] == "/bluebubbles/webhook"
    assert block.provider_kwargs()["webhook_port"] == 0
