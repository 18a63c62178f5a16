"""What redaction costs per log record (bot/logs.py), and how it grows with a line's length.

Usage: python benchmarks/log_bench.py [--records 20000]

A logger writes formatted records to a null stream, first with no redaction, then with
:func:`bot.runtime.logs.install_redaction` (the record factory plus the root filter) and a registry
holding 10,000 pairing codes and 100 node tokens, as a long-running bot would. Figures are
µs per record, the best of 5 runs. The last table times hostile single lines (1 MB each).
"""

from __future__ import annotations

import argparse
import io
import logging
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core import codes
from bot.runtime.logs import install_redaction, reset_redaction
from bot.runtime.redact import Redactor
from bot.runtime.remembered import remember_secret

TOKEN = f"{secrets.randbelow(10**9) + 10**9}:AA{secrets.token_urlsafe(24)}"
LINES = {
    "INFO pairbot": (
        "pairing approved provider=%s sender=%s by=%s",
        ("telegram", "4242", "owner:telegram:111111111"),
    ),
    "INFO httpx": (
        'HTTP Request: %s %s "%s %d %s"',
        ("POST", f"https://api.telegram.org/bot{TOKEN}/sendMessage", "HTTP/1.1", 200, "OK"),
    ),
    "DEBUG PTB update": (
        "Call to Bot API endpoint `getUpdates` finished with return value `%s`",
        (
            [
                {
                    "message": {
                        "message_id": 4,
                        "date": 1796057906,
                        "chat": {"id": 4001, "type": "private", "first_name": "Alice"},
                        "text": "Hello there, I would like a lesson",
                        "from": {"id": 4001, "is_bot": False, "first_name": "Alice"},
                    },
                    "update_id": 2,
                }
            ],
        ),
    ),
}


def per_record(logger: logging.Logger, msg: str, args: tuple[object, ...], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            logger.info(msg, *args)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    n = parser.parse_args().records

    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logger = logging.getLogger("bench")

    plain = {name: per_record(logger, msg, args, n) for name, (msg, args) in LINES.items()}
    for _ in range(10_000):
        remember_secret(codes.new_code())
    for _ in range(100):
        remember_secret(codes.new_token())
    install_redaction()
    redacted = {name: per_record(logger, msg, args, n) for name, (msg, args) in LINES.items()}
    reset_redaction()

    print(f"{'line':<18} {'chars':>6} {'no redaction':>13} {'redacted':>9} {'cost':>7}")
    for name, (msg, args) in LINES.items():
        chars = len(msg % args)
        print(
            f"{name:<18} {chars:>6} {plain[name]:>11.1f}µs {redacted[name]:>7.1f}µs "
            f"{redacted[name] - plain[name]:>5.1f}µs"
        )

    redactor = Redactor()
    for _ in range(100):
        remember_secret(codes.new_token())
    print(f"\n{'hostile 1 MB line':<24} {'seconds':>8}")
    for name, unit in (
        ("digits", "7"),
        ("letters", "a"),
        ("code shapes", "ABCD"),
        ("'text': ' openers", "'text': '"),
        ("backslashes", "\\"),
        ("token-shaped run", "Qw3-"),
    ):
        line = unit * (1_000_000 // len(unit))
        start = time.perf_counter()
        redactor.redact(line)
        print(f"{name:<24} {time.perf_counter() - start:>8.3f}")
    reset_redaction()


if __name__ == "__main__":
    main()
