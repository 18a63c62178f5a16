"""``pairbot pairing …`` and ``pairbot allowlist …``: DM pairing requests and the allowlist."""

from __future__ import annotations

import argparse
from datetime import datetime

from rich.text import Text

from bot.cli.context import EXIT_OK, Context, UsageError, provider_name
from bot.cli.output import (
    ID_WIDTH,
    TABLE_ROWS,
    allow_json,
    allow_lines,
    print_json_array,
    print_lines,
    print_listing,
    print_rows,
    until_cell,
)
from bot.core.durations import grant_length
from bot.core.models import PendingRequest
from bot.core.platforms import platform
from bot.core.text import ago, clean_name, remaining, until
from bot.services.pairing import Granted


def _provider_and_value(args: argparse.Namespace, what: str) -> tuple[str, str]:
    """Accept ``--provider P VALUE`` and ``P VALUE``, refuse anything else."""
    words: list[str] = args.words
    if args.provider_opt:
        if len(words) != 1:
            raise UsageError(f"expected one {what} after --provider, got {len(words)} words")
        return args.provider_opt, words[0]
    if len(words) != 2:
        raise UsageError(f"expected PROVIDER {what} (or --provider PROVIDER {what})")
    try:
        return provider_name(words[0]), words[1]
    except argparse.ArgumentTypeError as exc:
        raise UsageError(str(exc)) from None


def _list_provider(args: argparse.Namespace) -> str | None:
    if args.provider_opt and args.provider_pos and args.provider_opt != args.provider_pos:
        raise UsageError("two different providers given")
    return args.provider_opt or args.provider_pos  # type: ignore[no-any-return]


def cmd_pairing_list(ctx: Context) -> int:
    """``pairbot pairing list``."""
    provider = _list_provider(ctx.args)
    ttl = ctx.pairing.settings.pending_ttl

    def row(r: PendingRequest, now: datetime) -> tuple[str, ...]:
        return (
            r.code,
            r.provider,
            r.id,
            clean_name(r.display_name()),
            f"{ago(now - r.created_at)} ago",
            f"in {remaining(r.expires_at(ttl) - now)}",
        )

    print_listing(
        ctx,
        ctx.pairing.pending(provider),
        "Pairing requests ({})",
        ("Code", "Provider", "Sender id", "Name (as given)", "Requested", "Expires"),
        row,
        empty=f"No pending {provider + ' ' if provider else ''}pairing requests.",
    )
    return EXIT_OK


def _grant_end(ctx: Context) -> tuple[datetime | None, str]:
    """When a grant asked with ``--for`` ends (None: no ``--for``, for good), and how to
    say so after a sender (`` until 2026-01-08 12:00 UTC, 7d left``)."""
    if ctx.args.lasting is None:
        return None, ""
    try:
        length = grant_length(ctx.args.lasting)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    now = ctx.clock.now()
    return now + length, f" until {until(now + length, now)}"


def cmd_pairing_approve(ctx: Context) -> int:
    """``pairbot pairing approve``."""
    provider, code = _provider_and_value(ctx.args, "CODE")
    end, ends = _grant_end(ctx)
    req = ctx.pairing.approve(code, provider=provider, actor=ctx.actor, until=end)
    name = clean_name(req.display_name())
    who = f" ({name})" if name else ""
    ctx.out.print(Text(f"Approved {req.provider} sender {req.id}{who}{ends}."))
    if req.held:
        count = len(req.held)
        ctx.out.print(
            Text(
                f"The {count} message{'s' if count != 1 else ''} they wrote while waiting "
                f"{'go' if count != 1 else 'goes'} to the handler once a running bot tells them."
            )
        )
    return EXIT_OK


def cmd_pairing_reject(ctx: Context) -> int:
    """``pairbot pairing reject``."""
    provider, code = _provider_and_value(ctx.args, "CODE")
    req = ctx.pairing.reject(code, provider=provider, actor=ctx.actor)
    ctx.out.print(Text(f"Rejected {req.provider} sender {req.id}."))
    return EXIT_OK


def cmd_allow_list(ctx: Context) -> int:
    """``pairbot allowlist list``: millions of entries are laid out in slices by C loops.

    Grants that end add an ``Until`` column (and ``until`` to their JSON elements); a list
    of grants for good prints as it did before they existed.
    """
    groups = ctx.pairing.allowed_groups(_list_provider(ctx.args))
    if ctx.args.json:
        print_json_array(ctx, allow_json(groups))
        return EXIT_OK
    now = ctx.clock.now()
    ending = any(g.until is not None for g in groups)
    columns = ("Provider", "Sender id", "Source", *(("Until",) if ending else ()))
    count = sum(len(g.ids) for g in groups)
    if count <= TABLE_ROWS:
        print_rows(
            ctx,
            "Allowed senders ({})",
            columns,
            (
                (e.provider, e.id, e.source.value, *until_cell(e.until, now, ending))
                for g in groups
                for e in g.entries()
            ),
            empty="The allowlist is empty.",
        )
        return EXIT_OK
    widths = [
        max(len(columns[0]), *(len(g.provider) for g in groups)),
        min(ID_WIDTH, max(len(columns[1]), *(max(map(len, g.ids)) for g in groups))),
        *((len(columns[2]),) if ending else ()),
    ]
    print_lines(ctx, columns, widths, allow_lines(groups, widths, now=now))
    return EXIT_OK


def cmd_allow_add(ctx: Context) -> int:
    """``pairbot allowlist add``."""
    provider, raw = _provider_and_value(ctx.args, "ID")
    sender = _sender_id(provider, raw, strict=True)
    end, ends = _grant_end(ctx)
    granted = ctx.pairing.allow(provider, sender, actor=ctx.actor, until=end)
    if granted is Granted.ADDED:
        ctx.out.print(Text(f"Added {provider} sender {sender}{ends}."))
    elif granted is Granted.CHANGED:
        ctx.out.print(Text(f"{provider} sender {sender} is now allowed{ends or ' for good'}."))
    else:
        ctx.out.print(Text(f"{provider} sender {sender} was already allowed{ends}."))
    return EXIT_OK


def cmd_allow_remove(ctx: Context) -> int:
    """``pairbot allowlist remove``."""
    provider, raw = _provider_and_value(ctx.args, "ID")
    sender = _sender_id(provider, raw, strict=False)
    ctx.pairing.revoke(provider, sender, actor=ctx.actor)
    ctx.out.print(Text(f"Removed {provider} sender {sender}."))
    return EXIT_OK


def _sender_id(provider: str, raw: str, *, strict: bool) -> str:
    """The ID argument in its platform's normal form (``U012ab3cd`` is Slack's ``U012AB3CD``).

    ``strict`` (adding) also refuses an id that can never be a sender of the platform; removing
    takes any id, so an entry an older pairbot or Clawdbot stored can still be removed.
    """
    if not raw.strip() or raw.strip().startswith("@"):
        raise UsageError(f"{provider} sender ids are immutable ids, not @usernames")
    ids = platform(provider).ids
    if not strict:
        return ids.normalise(raw)
    try:
        return ids.accept(
            raw, refusal=f"ID {{value}} is not {ids.what} (usernames can change hands)"
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
