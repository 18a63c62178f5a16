"""Redaction (bot/runtime/logs.py, redact.py, remembered.py): no secret, code or message text
reaches a log, from any logger."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.runtime.logs import (
    ACTIVE,
    RedactFilter,
    add_secrets,
    install_redaction,
    reset_redaction,
    setup_logging,
)
from bot.runtime.redact import MASK, Redactor
from bot.runtime.remembered import SecretRegistry, remember_secret

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SHORT_SHAPED = "12345:abcdefghijklmnopqrst"  # the least the pattern catches: 5 digits, 20 chars
OPERATOR = "op-secret-Zx81Q"


@contextlib.contextmanager
def logger_to_buffer(
    name: str, fmt: str = "%(message)s", *, redact: RedactFilter | None = None
) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """Logger ``name`` writing ``fmt`` lines into a buffer through a handler of its own
    (filtered by ``redact``, if given), propagation off, at DEBUG; all undone after."""
    logger = logging.getLogger(name)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter(fmt))
    if redact is not None:
        handler.addFilter(redact)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing ``LEVEL message`` lines through the filter into a buffer."""
    redact = RedactFilter([OPERATOR, "", "short"])
    with logger_to_buffer("tests.redact", "%(levelname)s %(message)s", redact=redact) as made:
        yield made


@pytest.mark.parametrize(
    ("msg", "args", "want"),
    [
        ("token %s", (BOT_TOKEN,), "token [redacted]"),
        (
            f"GET https://api.telegram.org/bot{BOT_TOKEN}/getUpdates",
            (),
            "GET https://api.telegram.org/bot[redacted]/getUpdates",
        ),
        (
            "url=%s status=%d",
            (f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage", 200),
            "url=https://api.telegram.org/bot[redacted]/sendMessage status=200",
        ),
        ("shaped %s", (SHORT_SHAPED,), "shaped [redacted]"),
        ("operator %s", (OPERATOR,), "operator [redacted]"),
        ("operator=%(tok)s", ({"tok": OPERATOR},), "operator=[redacted]"),
        ("two %s %s", (BOT_TOKEN, OPERATOR), "two [redacted] [redacted]"),
        (f"inline {OPERATOR} twice {OPERATOR}", (), "inline [redacted] twice [redacted]"),
        (
            "dashes and underscores %s",
            ("987654321:AA-_bb-_cc-_dd-_ee-_ff",),
            "dashes and underscores [redacted]",
        ),
    ],
    ids=[
        "arg",
        "url-in-message",
        "url-in-args",
        "shortest-shape",
        "given-secret",
        "mapping-args",
        "two-secrets",
        "repeated",
        "dash-underscore",
    ],
)
def test_secrets_are_masked(
    capture: tuple[logging.Logger, io.StringIO], msg: str, args: tuple[object, ...], want: str
) -> None:
    logger, buffer = capture
    logger.info(msg, *args)
    assert buffer.getvalue() == f"INFO {want}\n"


@pytest.mark.parametrize(
    "text",
    [
        "pairing request created provider=telegram sender=4242",
        "time 12:30:45 and ratio 1:2",
        "1234:abcdefghijklmnopqrstuvwxyz",  # only 4 digits
        "12345:abcdefghijklmnopqrs",  # only 19 characters after the colon
        "short secrets are not masked: short",
        "percent 100% kept",
        "",
    ],
    ids=[
        "plain",
        "clock-times",
        "four-digits",
        "nineteen-chars",
        "short-secret-ignored",
        "percent",
        "empty",
    ],
)
def test_other_text_is_left_alone(capture: tuple[logging.Logger, io.StringIO], text: str) -> None:
    logger, buffer = capture
    logger.warning("%s", text)
    assert buffer.getvalue() == f"WARNING {text}\n"


def test_record_without_secrets_keeps_its_args(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, _ = capture
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    keep.addFilter(RedactFilter([OPERATOR]))
    logger.addHandler(keep)
    try:
        logger.info("sender=%s", "4242")
        logger.info("token=%s", OPERATOR)
    finally:
        logger.removeHandler(keep)
    assert [(r.msg, r.args) for r in records] == [
        ("sender=%s", ("4242",)),
        ("token=[redacted]", None),
    ]


def test_traceback_is_masked(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = capture
    try:
        raise RuntimeError(f"Client error for url 'https://api.telegram.org/bot{BOT_TOKEN}/x'")
    except RuntimeError:
        logger.exception("request failed with %s", OPERATOR)
    out = buffer.getvalue()
    assert BOT_TOKEN not in out
    assert OPERATOR not in out
    assert out.startswith("ERROR request failed with [redacted]\nTraceback")
    assert out.endswith(
        "RuntimeError: Client error for url 'https://api.telegram.org/bot[redacted]/x'\n"
    )


def test_stack_info_is_masked(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = capture
    # The stack shows this source line, comment and all: 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5P
    logger.info("stack of %s", OPERATOR, stack_info=True)  # 123456789:AAHdqTcvCH1vGWJxfSeofSAs
    out = buffer.getvalue()
    assert OPERATOR not in out
    assert "AAHdqTcvCH1vGWJxfSeofSAs" not in out
    assert out.startswith("INFO stack of [redacted]\nStack (most recent call last):\n")
    assert "# [redacted]\n" in out


def test_bad_format_does_not_raise_and_is_masked(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture
    logger.info("two args %s %s", OPERATOR)  # one argument short
    assert OPERATOR not in buffer.getvalue()
    assert buffer.getvalue() == "INFO two args %s %s ('[redacted]',)\n"


def test_setup_logging_installs_the_filter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    for name in ("httpx", "httpcore"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    setup_logging(level=logging.INFO, secrets=[OPERATOR])
    (handler,) = root.handlers
    assert [type(f) for f in handler.filters] == [RedactFilter]
    logging.getLogger("tests.setup").info("op=%s bot=%s", OPERATOR, BOT_TOKEN)
    err = capsys.readouterr().err
    assert err.endswith("INFO tests.setup: op=[redacted] bot=[redacted]\n")
    assert logging.getLogger("httpx").level == logging.WARNING


# --- run-time secrets: the registry ----------------------------------------------------------

CODE = "XK7P4MQD"  # a code as bot.core.codes draws it
TOKEN = "Qw3-rT_yU8iOp2aSdF5gHjK9lZxC7vBnM1qWeRtYuIo"  # 43 chars, as codes.new_token() draws


def registry_redactor(*secrets: str, limit: int = 100) -> Redactor:
    registry = SecretRegistry(limit=limit)
    for secret in secrets:
        registry.add(secret)
    return Redactor(registry=registry)


@pytest.mark.parametrize(
    "form",
    [
        "XK7P4MQD",
        "XK7P-4MQD",
        "xk7p-4mqd",
        "xk7p4mqd",
        "Xk7p-4mQd",
        "xk7p 4mqd",
        "/approve%20XK7P4MQD",
        "pairbot:/approve xk7p4mqd",
        "0XK7P4MQD1",
    ],
)
def test_a_registered_code_is_masked_in_every_form_a_person_types(form: str) -> None:
    redactor = registry_redactor(CODE)
    assert "4MQD" not in redactor.redact(f"got {form}!").upper()


def test_a_registered_letters_only_code_is_masked_even_in_lowercase() -> None:
    redactor = registry_redactor("HWZKMPQT")
    assert redactor.redact("owner typed /approve hwzk-mpqt") == "owner typed /approve [redacted]"
    assert (
        registry_redactor().redact("owner typed /approve hwzk-mpqt")
        == "owner typed /approve hwzk-mpqt"
    )  # not registered: a lowercase word is left alone


def test_a_registered_token_is_masked_alone_and_glued_to_other_characters() -> None:
    redactor = registry_redactor(TOKEN)
    assert redactor.redact(f"token {TOKEN} sent") == "token [redacted] sent"
    assert redactor.redact(f"x-{TOKEN}-y") == "x-[redacted]-y"
    assert redactor.redact(f"/connect?t={TOKEN}&n=1") == "/connect?t=[redacted]&n=1"
    assert redactor.redact(TOKEN[:-1]) == TOKEN[:-1]  # another string of the same kind
    assert redactor.redact(f"{TOKEN * 3000}-x") == MASK * 3000 + "-x"


def test_a_registered_secret_with_other_characters_is_masked_literally() -> None:
    redactor = registry_redactor("p@ss w0rd:!")
    assert redactor.redact("login p@ss w0rd:! done") == "login [redacted] done"


def test_short_values_are_never_secrets() -> None:
    redactor = registry_redactor("abc", "", "  12345 ")
    assert redactor.redact("abc 12345") == "abc 12345"


def test_the_registry_keeps_only_the_newest_secrets() -> None:
    registry = SecretRegistry(limit=3)
    tokens = [f"token-number-{n}-{'x' * 20}" for n in range(4)]
    for token in tokens[:3]:
        registry.add(token)
    registry.add(tokens[0])  # seen again: now the newest
    registry.add(tokens[3])  # the oldest (tokens[1]) is forgotten
    redactor = Redactor(registry=registry)
    assert len(registry) == 3
    assert [redactor.redact(t) == MASK for t in tokens] == [True, False, True, True]
    registry.clear()
    assert len(registry) == 0
    assert redactor.redact(tokens[0]) == tokens[0]


def test_remember_secret_feeds_the_process_registry() -> None:
    remember_secret(TOKEN)
    remember_secret(CODE)
    assert RedactFilter().redact(f"{TOKEN} {CODE.lower()}") == "[redacted] [redacted]"


# --- static secrets ---------------------------------------------------------------------------


def test_static_secrets_are_masked_as_written_and_url_encoded() -> None:
    redactor = Redactor(["pa ss/w@rd+1"])
    assert (
        redactor.redact("GET /x?password=pa%20ss%2Fw%40rd%2B1 ok")
        == "GET /x?password=[redacted] ok"
    )
    assert redactor.redact("pw pa+ss%2Fw%40rd%2B1") == "pw [redacted]"
    assert redactor.redact("pw pa ss/w@rd+1") == "pw [redacted]"


def test_add_secrets_extends_the_active_redactor() -> None:
    add_secrets(["configured-secret-1"])
    add_secrets(["configured-secret-2"])
    assert (
        RedactFilter(redactor=ACTIVE).redact("configured-secret-1 configured-secret-2")
        == "[redacted] [redacted]"
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Authorization: Bearer xoxb-1234567890-abcdefghij", "Authorization: Bearer [redacted]"),
        (
            "{'Authorization': 'Bot MTIzNDU2Nzg5MDEy.GhIjKl.mnopqrstuvwx'}",
            "{'Authorization': '[redacted]'}",
        ),
        ("header Basic dXNlcjpwYXNzd29yZA==", "header Basic [redacted]"),
        ("the bot token", "the bot token"),
    ],
)
def test_credentials_after_an_auth_scheme_are_masked(text: str, want: str) -> None:
    assert Redactor().redact(text) == want


# --- message texts in payloads --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # JSON (discord.http, slack-bolt's socket frames, signal-cli, BlueBubbles)
        ('{"content":"see you at 5","tts":false}', '{"content":"[redacted]","tts":false}'),
        ('{"text": "say \\"hi\\" to Bob", "ts": "1.2"}', '{"text": "[redacted]", "ts": "1.2"}'),
        (
            '{"message": "hello", "recipient": ["+15550001"]}',
            '{"message": "[redacted]", "recipient": ["+15550001"]}',
        ),
        ('{"body": {"text": "tap a button"}}', '{"body": {"text": "[redacted]"}}'),
        # Python reprs (PTB, slack-sdk, discord.gateway)
        (
            "{'text': 'hi there', 'chat': {'id': 4001}}",
            "{'text': '[redacted]', 'chat': {'id': 4001}}",
        ),
        ("{'text': \"it's me\", 'id': 1}", "{'text': \"[redacted]\", 'id': 1}"),
        ("{'caption': 'a cat \\'meme\\'', 'id': 1}", "{'caption': '[redacted]', 'id': 1}"),
        (
            "Message(message_id=1, text='hi there', chat=Chat(id=4001))",
            "Message(message_id=1, text='[redacted]', chat=Chat(id=4001))",
        ),
        (
            "Update(message=Message(text='x'), update_id=3)",
            "Update(message=Message(text='[redacted]'), update_id=3)",
        ),
        (
            "{'raw_text': 'typed', 'message_text': 'too'}",
            "{'raw_text': '[redacted]', 'message_text': '[redacted]'}",
        ),
        ('data=b\'{"text": "bytes"}\'', 'data=b\'{"text": "[redacted]"}\''),
        ("{'content': b'raw bytes'}", "{'content': b'[redacted]'}"),
        ("{'text': 'line one\\nline two'}", "{'text': '[redacted]'}"),
        # JSON inside a JSON string
        (
            '"payload": "{\\"text\\": \\"nested\\", \\"n\\": 1}"',
            '"payload": "{\\"text\\": \\"[redacted]\\", \\"n\\": 1}"',
        ),
        # URL-encoded forms and queries (Slack slash commands over HTTP)
        (
            "token=abc123def456&team_id=T1&text=approve+XK7P4MQD&user_id=U1",
            "token=[redacted]&team_id=T1&text=[redacted]&user_id=U1",
        ),
        (
            "GET /hook?hub.verify_token=vt-123456&hub.challenge=99",
            "GET /hook?hub.verify_token=[redacted]&hub.challenge=99",
        ),
        # a value a logger cut short (no closing quote): masked to the end
        (
            '> TEXT \'{"type":"res","token":"Qw3-rT_yU8iO...\' [120 bytes]',
            '> TEXT \'{"type":"res","token":"[redacted]',
        ),
        # secret-like keys
        (
            "{'access_token': 'EAAG1234', 'password': 'pw', 'app_secret': 's'}",
            "{'access_token': '[redacted]', 'password': '[redacted]', 'app_secret': '[redacted]'}",
        ),
        ("password: hunter2 accepted", "password: [redacted] accepted"),
    ],
)
def test_message_texts_and_secret_values_in_payloads_are_masked(text: str, want: str) -> None:
    assert Redactor().redact(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "{'message': {'message_id': 4, 'chat': {'id': 4001}}}",  # a dict, not a text
        "{'message_id': 4, 'content_type': 'text', 'token_type': 'bot'}",  # other keys
        "{'text': '', 'body': None}",  # nothing to hide
        "failed: message: too long (4100 > 4096)",  # prose
        "text=None, caption=True",
        "'Content-Type': 'application/json', 'context': 'x'",
        "subtext='keep' pretext: 'keep'",
        'HTTP Request: POST http://127.0.0.1:8081/v21.0/123/messages "HTTP/1.1 200 OK"',
    ],
)
def test_other_keys_and_prose_are_left_alone(text: str) -> None:
    assert Redactor().redact(text) == text


# --- the code-shape backstop ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ABCD2345",
        "ABCD-2345",
        "abcd2345",
        "abcd-2345",
        "Ab3d-2345",
        "HWZKMPQT",
        "('/approve', 'ZZZZ9999')",
        "code=QRST-6789&x",
        "custom_id: 'pairbot:/reject MNPQ2345'",
    ],
)
def test_anything_shaped_like_a_code_is_masked(text: str) -> None:
    cleaned = Redactor(registry=SecretRegistry()).redact(text)
    assert MASK in cleaned
    assert not any(part in cleaned for part in ("2345", "HWZK", "9999", "6789"))


@pytest.mark.parametrize(
    "text",
    [
        "telegram requests accepted",
        "real data",
        "23456789 bytes",
        "user 190000000000000002",
        "sender 5e000000-0000-4000-8000-000000000001",
        "UUID c9f717bf-e829-4a1e-9714-a1c8fb3fde0a",
        "request AQ95UJ9SZS",
        "U0DEMO001 in T0FAKE",
        "node-e94840319948",
        "ABCD2345X",
        "/tmp/pairbot-demo-abcd2345",
        "Telegram WhatsApp",
        "at 17:02:05,954",
    ],
)
def test_ids_words_and_numbers_are_not_taken_for_codes(text: str) -> None:
    assert Redactor(registry=SecretRegistry()).redact(text) == text


# --- every record of the process --------------------------------------------------------------


@pytest.fixture
def own_handler() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A third-party-style logger: its own handler (no filter), propagate off, DEBUG."""
    with logger_to_buffer("tests.thirdparty", "%(name)s %(message)s") as made:
        yield made


def test_install_redaction_covers_loggers_with_their_own_handlers(
    own_handler: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = own_handler
    remember_secret(CODE)
    add_secrets([OPERATOR])
    install_redaction()
    handler = logger.handlers[0]
    handler.filters.clear()  # only the record factory now stands between the record and out
    logger.debug("Event: %s", {"op": 0, "d": {"content": "hello there", "code": CODE}})
    logger.debug("op=%s", OPERATOR)
    assert buffer.getvalue() == (
        "tests.thirdparty Event: {'op': 0, 'd': {'content': "
        "'[redacted]', 'code': '[redacted]'}}\n"
        "tests.thirdparty op=[redacted]\n"
    )


def test_a_logger_made_after_set_up_with_its_own_handler_is_covered() -> None:
    install_redaction()
    with logger_to_buffer("tests.late") as (logger, buffer):
        logger.warning("sent %r", {"text": "a late text"})
    assert buffer.getvalue() == "sent {'text': '[redacted]'}\n"


def test_install_redaction_is_idempotent_and_reset_undoes_it() -> None:
    before = logging.getLogRecordFactory()
    install_redaction()
    hooked = logging.getLogRecordFactory()
    install_redaction()
    assert logging.getLogRecordFactory() is hooked is not before
    reset_redaction()
    assert logging.getLogRecordFactory() is before


def test_records_made_without_the_factory_are_caught_by_the_handler_filter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    setup_logging(level=logging.DEBUG, secrets=[OPERATOR])
    record = logging.makeLogRecord(
        {
            "name": "tests.queue",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "op %s text='%s'",
            "args": (OPERATOR, "queued text"),
        }
    )
    root.handle(record)
    assert capsys.readouterr().err.endswith("INFO tests.queue: op [redacted] text='[redacted]'\n")


def test_a_record_is_redacted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    install_redaction()
    calls: list[str] = []
    original = ACTIVE.redact

    def counting(text: str) -> str:
        calls.append(text)
        return original(text)

    monkeypatch.setattr(ACTIVE, "redact", counting)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("tests.once")
    keep = Keep()
    keep.addFilter(RedactFilter(redactor=ACTIVE))
    logger.addHandler(keep)
    try:
        logger.warning("text=%s", "hello")
    finally:
        logger.removeHandler(keep)
    assert calls == ["text=hello"]
    assert records[0].getMessage() == "text=[redacted]"


def test_a_record_the_redactor_fails_on_is_replaced_not_leaked(
    own_handler: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, buffer = own_handler
    install_redaction()

    def broken(_record: logging.LogRecord) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ACTIVE, "redact_record", broken)
    logger.info("secret text %s", OPERATOR)
    assert buffer.getvalue() == "tests.thirdparty [record dropped: redaction failed]\n"


def test_debug_keeps_every_library_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    for name in ("httpx", "httpcore", "apscheduler", "telegram.ext.Updater"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    setup_logging(level=logging.DEBUG)
    assert all(
        logging.getLogger(name).isEnabledFor(logging.DEBUG)
        for name in ("httpx", "httpcore", "apscheduler", "telegram.ext.Updater")
    )


def test_the_cli_main_redacts_like_pairbot_run(
    tmp_path: Path,
    own_handler: tuple[logging.Logger, io.StringIO],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.cli.main import main

    logger, buffer = own_handler
    monkeypatch.setenv("PAIRBOT_T_TOKEN", BOT_TOKEN.replace(":", "x"))
    config = tmp_path / "pairbot.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nproviders:\n"
        "  discord: {token: '${PAIRBOT_T_TOKEN}'}\n"
    )
    logger.handlers[0].filters.clear()
    assert main(["--debug", "pairing", "list", "--config", str(config)]) == 0
    logger.debug("token %s, %s", BOT_TOKEN.replace(":", "x"), {"text": "hi", "c": "ABCD-2345"})
    assert (
        buffer.getvalue() == "tests.thirdparty token [redacted], {'text': '[redacted]', "
        "'c': '[redacted]'}\n"
    )


# --- cost: linear however hostile the line ----------------------------------------------------

HOSTILE = {
    "digits": "7" * 4,  # the bot-token shape: digits that never reach a colon
    "letters": "a" * 4,
    "dotted-key": "a_b.",  # a key prefix that never ends in a key
    "keys": "text",  # key words with no separator
    "text-eq": "text=",
    "openers": "'text': '",
    "escapes": "\\\\\\'",
    "escaped-json": '\\"text\\": \\"a\\',
    "code-shapes": "ABCD",
    "code-dashes": "AB2-",
    "words": "real data ",
    "bearer": "Bearer ",
    "token-run": "Qw3-",
}


def _redact_seconds(redactor: Redactor, unit: str, size: int) -> float:
    line = unit * (size // len(unit))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        redactor.redact(line)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("unit", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_lines_cost_linear_time(unit: str) -> None:
    redactor = registry_redactor(TOKEN, CODE, "p@ss w0rd:!")
    small, large = 20_000, 160_000
    ratio = _redact_seconds(redactor, unit, large) / max(
        _redact_seconds(redactor, unit, small), 1e-6
    )
    assert ratio < 24, f"8x the input took {ratio:.0f}x the time"  # quadratic would be ~64x


def test_every_value_a_config_reads_from_the_environment_is_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.runtime.config import load_config

    hook = "https://hooks.example.com/T00/B00/sEcReTpAtH"
    monkeypatch.setenv("PAIRBOT_T_HOOK", hook)
    config = tmp_path / "pairbot.yaml"
    config.write_text("handler: {kind: webhook, url: '${PAIRBOT_T_HOOK}'}\n")
    assert load_config(config).handler.url == hook
    assert ACTIVE.redact(f"POST {hook} failed") == "POST [redacted] failed"


def test_a_record_factory_set_by_a_library_later_is_wrapped_again(
    own_handler: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = own_handler
    install_redaction()
    logger.handlers[0].filters.clear()
    ours = logging.getLogRecordFactory()

    def library_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        return logging.LogRecord(*args, **kwargs)  # type: ignore[arg-type]

    logging.setLogRecordFactory(library_factory)
    try:
        install_redaction()  # what `pairbot run` does again once everything has started
        logger.info("%r", {"text": "after the library"})
    finally:
        logging.setLogRecordFactory(ours)
    assert buffer.getvalue() == "tests.thirdparty {'text': '[redacted]'}\n"
