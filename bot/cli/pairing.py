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
)
from bot.core.models import PendingRequest
from bot.core.platforms import platform
from bot.core.text import ago, clean_name, remaining


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


def cmd_pairing_approve(ctx: Context) -> int:
    """``pairbot pairing approve``."""
    provider, code = _provider_and_value(ctx.args, "CODE")
    req = ctx.pairing.approve(code, provider=provider, actor=ctx.actor)
    name = clean_name(req.display_name())
    ctx.out.print(Text(f"Approved {req.provider} sender {req.id}{f' ({name})' if name else ''}."))
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
    """``pairbot allowlist list``: millions of entries are laid out in slices by C loops."""
    groups = ctx.pairing.allowed_groups(_list_provider(ctx.args))
    if ctx.args.json:
        print_json_array(ctx, allow_json(groups))
        return EXIT_OK
    columns = ("Provider", "Sender id", "Source")
    count = sum(len(g.ids) for g in groups)
    if count <= TABLE_ROWS:
        print_rows(
            ctx,
            "Allowed senders ({})",
            columns,
            ((e.provider, e.id, e.source.value) for g in groups for e in g.entries()),
            empty="The allowlist is empty.",
        )
        return EXIT_OK
    widths = [
        max(len(columns[0]), *(len(g.provider) for g in groups)),
        min(ID_WIDTH, max(len(columns[1]), *(max(map(len, g.ids)) for g in groups))),
    ]
    print_lines(ctx, columns, widths, allow_lines(groups, widths))
    return EXIT_OK


def cmd_allow_add(ctx: Context) -> int:
    """``pairbot allowlist add``."""
    provider, raw = _provider_and_value(ctx.args, "ID")
    sender = _sender_id(provider, raw, strict=True)
    if ctx.pairing.allow(provider, sender, actor=ctx.actor):
        ctx.out.print(Text(f"Added {provider} sender {sender}."))
    else:
        ctx.out.print(Text(f"{provider} sender {sender} was already allowed."))
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
