"""The redaction filter (bot/logs.py): secrets and bot-token-shaped strings never reach a log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bot.logs import RedactFilter, setup_logging

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SHORT_SHAPED = "12345:abcdefghijklmnopqrst"  # the least the pattern catches: 5 digits, 20 chars
OPERATOR = "op-secret-Zx81Q"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing ``%(message)s`` lines through the filter into a buffer."""
    logger = logging.getLogger("tests.redact")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactFilter([OPERATOR, "", "short"]))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, buffer
    logger.removeHandler(handler)
    logger.propagate = True


@pytest.mark.parametrize(
    ("msg", "args", "want"),
    [
        ("token %s", (BOT_TOKEN,), "token [redacted]"),
        (f"GET https://api.telegram.org/bot{BOT_TOKEN}/getUpdates", (),
         "GET https://api.telegram.org/bot[redacted]/getUpdates"),
        ("url=%s status=%d", (f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage", 200),
         "url=https://api.telegram.org/bot[redacted]/sendMessage status=200"),
        ("shaped %s", (SHORT_SHAPED,), "shaped [redacted]"),
        ("operator %s", (OPERATOR,), "operator [redacted]"),
        ("operator=%(tok)s", ({"tok": OPERATOR},), "operator=[redacted]"),
        ("two %s %s", (BOT_TOKEN, OPERATOR), "two [redacted] [redacted]"),
        (f"inline {OPERATOR} twice {OPERATOR}", (), "inline [redacted] twice [redacted]"),
        ("dashes and underscores %s", ("987654321:AA-_bb-_cc-_dd-_ee-_ff",),
         "dashes and underscores [redacted]"),
    ],
    ids=["arg", "url-in-message", "url-in-args", "shortest-shape", "given-secret",
         "mapping-args", "two-secrets", "repeated", "dash-underscore"],
)
def test_secrets_are_masked(capture: tuple[logging.Logger, io.StringIO], msg: str,
                            args: tuple[object, ...], want: str) -> None:
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
    ids=["plain", "clock-times", "four-digits", "nineteen-chars", "short-secret-ignored",
         "percent", "empty"],
)
def test_other_text_is_left_alone(capture: tuple[logging.Logger, io.StringIO],
                                  text: str) -> None:
    logger, buffer = capture
    logger.warning("%s", text)
    assert buffer.getvalue() == f"WARNING {text}\n"


def test_record_without_secrets_keeps_its_args(capture: tuple[logging.Logger, io.StringIO]
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
    assert [(r.msg, r.args) for r in records] == [("sender=%s", ("4242",)),
                                                  ("token=[redacted]", None)]


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
    assert out.endswith("RuntimeError: Client error for url "
                        "'https://api.telegram.org/bot[redacted]/x'\n")


def test_stack_info_is_masked(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = capture
    # The stack shows this source line, comment and all: 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5P
    logger.info("stack of %s", OPERATOR, stack_info=True)  # 123456789:AAHdqTcvCH1vGWJxfSeofSAs
    out = buffer.getvalue()
    assert OPERATOR not in out
    assert "AAHdqTcvCH1vGWJxfSeofSAs" not in out
    assert out.startswith("INFO stack of [redacted]\nStack (most recent call last):\n")
    assert "# [redacted]\n" in out


def test_bad_format_does_not_raise_and_is_masked(capture: tuple[logging.Logger, io.StringIO]
                                                 ) -> None:
    logger, buffer = capture
    logger.info("two args %s %s", OPERATOR)  # one argument short
    assert OPERATOR not in buffer.getvalue()
    assert buffer.getvalue() == "INFO two args %s %s ('[redacted]',)\n"


def test_setup_logging_installs_the_filter(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
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
