"""``pairbot store export`` and ``pairbot store import``: the whole state, out of one backend
and into another (:mod:`bot.services.transfer` holds the document and the rules)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.text import Text

from bot.cli.context import EXIT_OK, EXIT_USAGE, Context, UsageError
from bot.core.errors import StoreError
from bot.services import transfer
from stores import JsonFileStore
from stores._files import atomic_write


def cmd_store_export(ctx: Context) -> int:
    """``pairbot store export [--output FILE]``: the document on stdout, or in FILE (0600)."""
    document = transfer.export_state(ctx.store)
    data = transfer.encode(document, now=ctx.clock.now())
    output: str | None = ctx.args.output
    if output is None or output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return EXIT_OK
    path = Path(output).expanduser()
    if path.is_dir():
        raise UsageError(f"--output: {path} is a directory")
    try:
        atomic_write(path, data)  # 0600, fsynced, renamed into place
    except OSError as exc:
        raise UsageError(f"--output: cannot write {path}: {exc.strerror or exc}") from None
    _say(ctx, f"Exported {transfer.summary(document.counts())} to {path}.")
    return EXIT_OK


def cmd_store_import(ctx: Context) -> int:
    """``pairbot store import FILE | --from-state-dir DIR [--merge]``."""
    file: str | None = ctx.args.file
    state_dir: str | None = ctx.args.from_state_dir
    if state_dir is not None and file is None:
        document, source = _from_state_dir(Path(state_dir).expanduser()), state_dir
    elif file is not None and state_dir is None:
        document, source = _from_file(file), file
    else:
        raise UsageError("give either FILE or --from-state-dir DIR")
    try:
        report = transfer.import_state(ctx.store, document, merge=ctx.args.merge)
    except transfer.NotEmptyError as exc:
        sys.stderr.write(f"pairbot: error: {exc}; nothing was written\n")
        return EXIT_USAGE
    line = f"Imported {transfer.summary(report.written)} from {source}."
    if any(report.kept.values()):
        line += f" Kept what the store had: {transfer.summary(report.kept)}."
    _say(ctx, line)
    return EXIT_OK


def _from_file(file: str) -> transfer.StateDocument:
    if file == "-":
        return transfer.decode(sys.stdin.buffer.read(), source="stdin")
    path = Path(file).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"FILE: cannot read {path}: {exc.strerror or exc}") from None
    return transfer.decode(data, source=str(path))


def _from_state_dir(directory: Path) -> transfer.StateDocument:
    """A pairbot or Clawdbot state dir, read (never written: no lock, no repair)."""
    if not directory.is_dir():
        raise UsageError(f"--from-state-dir: {directory} is not a directory")
    source = JsonFileStore(directory)
    try:
        source.check()  # a corrupt file is named, never read as empty
        return transfer.export_state(source)
    except StoreError as exc:
        raise UsageError(f"--from-state-dir: {exc}") from None
    finally:
        source.close()


def _say(ctx: Context, line: str) -> None:
    ctx.out.print(Text(line))
