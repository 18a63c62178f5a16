"""How the commands print: JSON and listings, streamed so memory never grows with them.

Listings stream: past :data:`TABLE_ROWS` rows they print plain aligned lines as they go
instead of a table, and ``--json`` writes its array element by element, so a listing of
millions starts at once and its memory does not grow with its length.
"""

from __future__ import annotations

import json
import select
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import chain, islice, repeat
from typing import Any, Protocol, TypeVar

from rich.table import Table
from rich.text import Text

from bot.cli.context import Context
from bot.core.clock import iso
from bot.core.text import until
from bot.services.pairing import AllowGroup

TABLE_ROWS = 200
"""Longer listings print plain aligned lines, one per row, as they go. Rich lays a table out
whole before its first line appears (over 20 s for 100,000 rows), and a table longer than a
few screens reads no better than lines, which ``grep`` and ``head`` handle too."""


_SLICE = 4096
"""Rows laid out per write in a long listing: few writes, and each of them small."""


def print_json(ctx: Context, value: Any) -> None:
    ctx.out.file.write(json.dumps(value, indent=2) + "\n")


def print_json_array(ctx: Context, runs: Iterable[str]) -> None:
    """Print one JSON array, laid out as ``json.dumps(..., indent=2)`` would, as it comes.

    ``runs`` are elements already encoded and indented, one or more per run (joined by
    ``",\n  "``); the whole array is never held in memory.
    """
    out = ctx.out.file
    opening = "[\n  "
    for run in runs:
        out.write(opening + run)
        opening = ",\n  "
    out.write("[]\n" if opening == "[\n  " else "\n]\n")


def json_elements(values: Iterable[Any]) -> Iterator[str]:
    """Encode values one by one as elements of an indented array (see print_json_array)."""
    for value in values:
        yield json.dumps(value, indent=2).replace("\n", "\n  ")  # JSON strings hold no newline


def allow_json(groups: Sequence[AllowGroup]) -> Iterator[str]:
    """Encode allowlist entries as array elements, a slice of ids per call of the C encoder.

    Every element of a group differs only by its id, so the text between two ids is fixed:
    it is the encoder's item separator, and a slice of ids encodes into a run of elements.
    """
    for group in groups:
        head = f'{{\n    "provider": {json.dumps(group.provider)},\n    "id": '
        ends = "" if group.until is None else f',\n    "until": {json.dumps(iso(group.until))}'
        tail = f',\n    "source": {json.dumps(group.source.value)}{ends}\n  }}'
        encoder = json.JSONEncoder(separators=(f"{tail},\n  {head}", ": "))
        for start in range(0, len(group.ids), _SLICE):
            yield head + encoder.encode(group.ids[start : start + _SLICE])[1:-1] + tail


def print_rows(
    ctx: Context,
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    empty: str,
    plain: bool = False,
) -> None:
    """Print a listing: a table (``title`` gets the count) up to TABLE_ROWS rows, else plain
    aligned lines as the rows come; ``plain``: lines whatever the count (a table of many
    columns would cut its cells to the terminal's width).

    Only the first TABLE_ROWS + 1 rows are read before printing starts (to choose, and to
    size the columns), so memory does not grow with the listing.
    """
    rows = iter(rows)
    ahead = list(islice(rows, TABLE_ROWS + 1))
    if not ahead:
        ctx.out.print(Text(empty))
    elif len(ahead) <= TABLE_ROWS and not plain:
        table = Table(title=title.format(len(ahead)), title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in ahead:
            table.add_row(*map(Text, row))
        ctx.out.print(table)
    else:
        shown = [[_shown(cell) for cell in row] for row in ahead]
        widths = [max(map(len, column)) for column in zip(columns, *shown, strict=False)]
        print_lines(ctx, columns, widths, _aligned(chain(ahead, rows), widths))


class _Listed(Protocol):
    def as_json(self) -> dict[str, Any]: ...


L = TypeVar("L", bound=_Listed)


def print_listing(
    ctx: Context,
    items: Iterable[L],
    title: str,
    columns: Sequence[str],
    row: Callable[[L, datetime], Sequence[str]],
    *,
    empty: str,
) -> None:
    """Print ``items`` as a listing command does: with ``--json`` an array of their public
    JSON views, else :func:`print_rows` of ``row(item, now)``."""
    if ctx.args.json:
        print_json_array(ctx, json_elements(item.as_json() for item in items))
        return
    now = ctx.clock.now()
    print_rows(ctx, title, columns, (row(item, now) for item in items), empty=empty)


def print_lines(
    ctx: Context, columns: Sequence[str], widths: Sequence[int], blocks: Iterable[str]
) -> None:
    """Print a header line and then ``blocks``: lines joined by newlines, none at the end."""
    out = ctx.out.file
    out.write(_line(columns, widths) + "\n")
    for block in blocks:
        out.write(block + "\n")


def _aligned(rows: Iterable[Sequence[str]], widths: Sequence[int]) -> Iterator[str]:
    """Lay rows out as aligned lines, _SLICE rows per block."""
    rows = iter(rows)
    while block := list(islice(rows, _SLICE)):
        yield "\n".join(_line([_shown(cell) for cell in row], widths) for row in block)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Pad every cell but the last to its column's width, two spaces apart."""
    return "  ".join([*map(str.ljust, cells[:-1], widths), cells[-1]])


ID_WIDTH = 40
"""Sender ids are padded to the longest, up to this: one odd id does not widen every line."""


def until_cell(end: datetime | None, now: datetime, shown: bool) -> tuple[str, ...]:
    """The ``Until`` cell of an allowlist row, when the listing has that column (``shown``):
    when the grant ends, or ``-`` for one that does not."""
    if not shown:
        return ()
    return (until(end, now) if end is not None else "-",)


def allow_lines(
    groups: Sequence[AllowGroup], widths: Sequence[int], *, now: datetime
) -> Iterator[str]:
    """Lay allowlist entries out as aligned lines, a slice of ids per block, in C loops (a
    fourth width: the listing has an ``Until`` column)."""
    for group in groups:
        prefix = group.provider.ljust(widths[0]) + "  "
        suffix = "  " + group.source.value
        if len(widths) > 2:
            suffix = "  ".join([suffix.ljust(widths[2] + 2), *until_cell(group.until, now, True)])
        glue = f"{suffix}\n{prefix}"
        for start in range(0, len(group.ids), _SLICE):
            ids = group.ids[start : start + _SLICE]
            if not "".join(ids).isprintable():
                ids = [_shown(i) for i in ids]
            yield prefix + glue.join(map(str.ljust, ids, repeat(widths[1]))) + suffix


def _shown(cell: str) -> str:
    """A cell as a plain line shows it: as is, or JSON-escaped if it holds anything that is
    not printable (a newline, an escape sequence, an invisible character)."""
    return cell if cell.isprintable() else json.dumps(cell)


def stdout_closed() -> bool:
    """Whether nobody reads standard output any more (the far end of its pipe is closed)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
