"""``pairbot run``, ``demo``, ``doctor`` and ``audit``: running the bot, watching the whole
flow, checking the state and config, reading what happened."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.text import Text

from bot.cli.context import EXIT_LOOKUP, EXIT_OK, Context, UsageError, cli_state_dir
from bot.cli.output import json_elements, print_json_array, print_rows
from bot.core.config import Config
from bot.core.errors import ConfigError, PairbotError, StoreError
from bot.core.text import clean
from bot.runtime.config import (
    NO_OWNERS,
    ModeVerdict,
    check_file_mode,
    find_config,
    load_config,
)
from bot.runtime.logs import install_redaction
from stores import JsonFileStore

log = logging.getLogger("bot.cli.main")
"""One logger for the whole command: its lines read ``bot.cli.main``, as they always have."""


def cmd_run(args: argparse.Namespace) -> int:
    """``pairbot run``: serve until SIGINT or SIGTERM, then stop cleanly."""
    import asyncio
    import signal

    from bot.cli.compose import open_app
    from bot.runtime.logs import setup_logging

    config_path = find_config(getattr(args, "config", None))
    if config_path is None:
        raise UsageError(
            "no config: pass --config PATH or set PAIRBOT_CONFIG (see config.example.yaml)"
        )
    config = load_config(config_path)
    mode = check_file_mode(config_path)
    if mode.verdict is ModeVerdict.REFUSE:
        raise ConfigError(mode.message, source=str(config_path))
    setup_logging(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        secrets=config.secrets(),
    )
    if mode.verdict is ModeVerdict.WARN:
        log.warning("%s: %s", config_path, mode.message)
    if not config.owners:
        log.warning("%s", NO_OWNERS)
    state_dir = getattr(args, "state_dir", None)
    chosen = Path(state_dir).expanduser() if state_dir else None

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app = open_app(config, state_dir=chosen)
        async with app:
            install_redaction()  # again: handlers (or a record factory) the SDKs set up
            await stop.wait()
            log.info("stopping")

    asyncio.run(serve())
    return EXIT_OK


def cmd_gateway_fingerprint(args: argparse.Namespace) -> int:
    """``pairbot gateway fingerprint``: what nodes pin (``--fingerprint``)."""
    from bot.cli.compose import state_dir_of
    from bot.cli.tls import gateway_tls

    config_path = find_config(getattr(args, "config", None))
    if config_path is None:
        raise UsageError("no config: pass --config PATH or set PAIRBOT_CONFIG")
    config = load_config(config_path)
    state_dir = getattr(args, "state_dir", None)
    tls = gateway_tls(config, state_dir_of(config, Path(state_dir) if state_dir else None))
    if tls is None:
        raise ConfigError(
            "not set: the gateway serves plain ws://, with no certificate to pin "
            "(set gateway.tls: auto, or cert_file and key_file)",
            field="gateway.tls",
        )
    Console(highlight=False, soft_wrap=True).print(Text(tls.fingerprint))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``pairbot demo``."""
    from bot.cli.demo import available_platforms
    from bot.cli.demo import main as demo_main

    provider = args.demo_provider
    if provider != "all" and provider not in available_platforms():
        raise UsageError(
            f"no demo for {provider} yet (available: {', '.join(available_platforms())})"
        )
    return demo_main(provider)


def cmd_audit(ctx: Context) -> int:
    """``pairbot audit``."""
    records = ctx.store.iter_audit(limit=ctx.args.limit)
    if ctx.args.json:
        print_json_array(ctx, json_elements(records))
        return EXIT_OK
    keys = ("event", "actor", "provider", "subject", "outcome")
    print_rows(
        ctx,
        "Audit (last {})",
        ("Time", "Event", "Actor", "Provider", "Subject", "Outcome"),
        (
            (
                str(r.get("ts", "")).replace("T", " ")[:19],
                *(clean(str(r.get(k, "") or ""), limit=40) for k in keys),
            )
            for r in records
        ),
        empty="The audit log is empty.",
    )
    return EXIT_OK


def _doctor_store(
    config: Config, state_dir: Path, report: Callable[[bool | None, str], None]
) -> None:
    """The configured SQL store: where it is, its modes, its schema and integrity (read-only),
    and any JSON state left in the state dir that this backend does not read."""
    from bot.cli.compose import configured_store

    report(None, f"store: {config.store.described()}")
    try:
        store = configured_store(config, state_dir)
    except (PairbotError, ValueError) as exc:
        report(False, f"store: {exc}")
        return
    try:
        diagnose = getattr(store, "diagnose", None)
        if callable(diagnose):  # a server: reachable, schema, privileges
            for ok, message in diagnose():
                report(ok, message)
        else:
            for ok, message in store.access_report():
                report(ok, message)
            try:
                store.check()
            except StoreError as exc:
                report(False, str(exc))
            else:
                report(True, "the database is readable, its schema known and undamaged")
    finally:
        store.close()
    if any((state_dir / "credentials").glob("*.json")):
        report(
            None,
            f"{state_dir}/credentials holds JSON state this backend does not read; move it "
            f"with: pairbot store import --from-state-dir {state_dir}",
        )


def cmd_doctor(args: argparse.Namespace) -> int:
    """``pairbot doctor``: report what would stop pairbot or weaken it; exit 1 on problems.

    It never fails on what it inspects: a config that does not load and a state dir that
    cannot be opened are reported as FAIL lines like every other problem. It opens nothing
    for writing and takes no lock, so it also works while the bot runs.
    """
    return doctor(find_config(getattr(args, "config", None)), args)


def doctor(config_path: Path | None, args: argparse.Namespace) -> int:
    """The checks of ``pairbot doctor`` over ``config_path`` (``args`` may name the state
    dir: :func:`~bot.cli.context.cli_state_dir`); return its exit status."""
    out = Console(highlight=False, soft_wrap=True)
    problems = 0

    def report(ok: bool | None, message: str) -> None:
        nonlocal problems
        problems += 0 if ok is not False else 1
        out.print(Text(f"{'info' if ok is None else 'ok  ' if ok else 'FAIL'} {message}"))

    config = None
    if config_path is None:
        out.print("info no config file given (--config or $PAIRBOT_CONFIG)")
    else:
        try:
            config = load_config(config_path)
        except (PairbotError, ValueError, OSError) as exc:
            report(False, str(exc))
    state_dir = cli_state_dir(args, config)
    if config is None or config.store.backend == "json":
        for ok, message in JsonFileStore.inspect(state_dir):
            report(ok, message)
    else:
        _doctor_store(config, state_dir, report)
    if config_path is not None and config is not None:
        report(True, f"{config_path} is valid")
        mode = check_file_mode(config_path)
        report(mode.verdict is ModeVerdict.OK, f"{config_path}: {mode.message}")
        if not config.owners:
            report(False, NO_OWNERS)
        if config.providers.signal is not None:  # one short request to its daemon
            from providers.signal.doctor import check_daemon

            for finding in check_daemon(config.providers.signal.provider_kwargs()):
                report(*finding)
        if config.providers.telegram is not None:  # getMe, and one sendChatAction per owner
            from providers.telegram.doctor import check_owners

            owners = [o.user_id for o in config.owners if o.provider == "telegram"]
            for finding in check_owners(config.providers.telegram.provider_kwargs(), owners):
                report(*finding)
    out.print("No problems found." if not problems else f"{problems} problem(s) found.")
    return EXIT_OK if not problems else EXIT_LOOKUP
