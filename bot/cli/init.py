"""``pairbot init``: the first run. It asks which platforms to connect, each one's tokens and
values and its owner's id, writes a commented config (0600, atomically, never over an existing
file without ``--force``), checks it as ``pairbot doctor`` does and prints the line that starts
pairbot.

What it asks of a platform comes from the platforms table (:mod:`bot.core.platforms`: each
block's ``asks``, and its id rule's ``find`` for the owner). A secret is read from the
environment variable the table names, and the file then holds a ``${VAR}`` reference to it;
only when the variable is not set is it asked for, without echo, and kept in the file itself
(said so, in the file and on the terminal). With ``--yes`` nothing is asked: the flags, the
environment and the defaults give everything, and what is missing is one error line naming the
flag or the variable. The file is checked with the real loader before it is put in place.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import re
import shlex
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console

from bot.cli.context import EXIT_OK, UsageError
from bot.cli.run import doctor
from bot.core.config import Config, GatewayConfig, HandlerConfig, Owner
from bot.core.errors import ConfigError
from bot.core.platforms import KNOWN_PROVIDERS, PLATFORMS, Platform, find
from bot.core.schema import Ask, secret_fields
from bot.runtime.config import ENV_REF, load_config
from bot.runtime.logs import add_secrets
from stores import DEFAULT_STATE_DIR, STATE_DIR_ENV
from stores._files import place, staged

SECRET_ENVS: tuple[str, ...] = tuple(
    ask.env for p in PLATFORMS for ask in p.config.asks if ask.env is not None
)
"""Every environment variable init reads a platform's secret from, in the table's order."""

DESCRIPTION = f"""\
Write a first config file, asking on the terminal: which platforms to connect, each
one's tokens and values, and your own id there (and how to find it). A secret whose
environment variable is set is written as ${{VAR}} (its value read at each start, never
put in the file); one typed at the prompt is not shown, and is kept in the file. The
file is written 0600 and atomically, never over an existing file without --force, and
only once pairbot's own loader accepts it. Then it is checked as `pairbot doctor`
checks, and the exact `pairbot run` line is printed.

With --yes nothing is asked: the flags, the environment and the defaults give
everything, and whatever is missing is an error naming the flag or the variable.
Platforms are set up in their default mode (Telegram polling, Slack Socket Mode); for
the others, edit the file after (docs/providers/).

{textwrap.fill(f"Secrets are read from: {', '.join(SECRET_ENVS)}.", 88)}

Exit status: 0 written and checked; 1 written, but the checks found problems (listed);
2 nothing written (bad input, or the file exists)."""

EPILOG = """\
examples:
  pairbot init
  TELEGRAM_BOT_TOKEN=... pairbot init --yes --owner telegram:123456789
  pairbot init --yes --provider whatsapp --owner 15551234567 \\
      --set providers.whatsapp.phone_number_id=106540352242922
  pairbot init --yes --provider telegram --state-dir /srv/pairbot --set gateway.enabled=false"""

_OWN_FLAGS = {"state_dir": "--state-dir", "owners": "--owner"}
"""Top-level keys ``--set`` leaves to their own flags."""


def default_config_path() -> Path:
    """Where init writes unless told: ``$PAIRBOT_CONFIG``, else the user's config dir."""
    chosen = os.environ.get("PAIRBOT_CONFIG")
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "pairbot.yaml"


# --- the file as a tree: what it holds and the comment above each key -------------------------


@dataclass(slots=True)
class Value:
    """A key's value as the file writes it (a ``${VAR}`` for a secret from the environment)."""

    written: Any
    comment: str = ""


@dataclass(slots=True)
class Section:
    """A mapping of keys, each a :class:`Value` or a nested :class:`Section`."""

    entries: dict[str, Value | Section] = field(default_factory=dict)
    comment: str = ""

    def plain(self) -> dict[str, Any]:
        """The tree as the YAML parser will read it back."""
        return {
            k: v.plain() if isinstance(v, Section) else v.written for k, v in self.entries.items()
        }


_PLAIN_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
"""A string YAML may read unquoted, also in a flow mapping, if it reads back as itself."""
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
"""What a YAML double-quoted scalar cannot hold as it is: C1 controls and the characters
YAML reads as line breaks (folded away), surrogates and non-characters."""


def _quoted(text: str) -> str:
    """``text`` as a YAML scalar: a plain word (``pairing``, ``127.0.0.1``) as it is, anything
    else double-quoted (JSON's escapes, which YAML shares, and ``\\u`` for what YAML would
    not read back as written)."""
    if _PLAIN_WORD.match(text) and yaml.safe_load(text) == text:
        return text
    body = json.dumps(text, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", body)


def _flow(value: Any) -> str:
    """``value`` in YAML's one-line (flow) form; strings always quoted."""
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, dict):
        items = (f"{_flow(k)}: {_flow(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(yaml.safe_dump(value)).removesuffix("\n...\n").strip()


def _comment(text: str, pad: str) -> list[str]:
    width = 99 - len(pad) - 2
    return [f"{pad}# {line}" for para in text.splitlines() for line in textwrap.wrap(para, width)]


def _lines(section: Section, depth: int = 0) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for key, node in section.entries.items():
        if depth == 0 and out:
            out.append("")
        out += _comment(node.comment, pad)
        if isinstance(node, Section):
            out.append(f"{pad}{_flow(key)}:")
            out += _lines(node, depth + 1)
        elif isinstance(node.written, list) and node.written:
            out.append(f"{pad}{_flow(key)}:")
            out += [f"{pad}  - {_flow(item)}" for item in node.written]
        else:
            out.append(f"{pad}{_flow(key)}: {_flow(node.written)}")
    return out


def render(tree: Section, path: Path) -> str:
    """The commented YAML text of ``tree``, as written to ``path``."""
    run = f"pairbot run --config {shlex.quote(str(path))}"
    header = (
        "pairbot configuration, written by `pairbot init`.\n"
        f"Check it: pairbot doctor --config {shlex.quote(str(path))}\n"
        f"Run it:   {run}\n"
        "${VAR} is read from the environment at each start (a missing one is an error). Every "
        "other key, its default and its range: config.example.yaml. Unknown keys are errors. "
        "Keep this file private (0600): whoever can write it can make themselves owner."
    )
    return "\n".join([*_comment(header, ""), "", *_lines(tree)]) + "\n"


# --- --set KEY=VALUE -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Set:
    """One ``--set``: a dotted key of the config and the YAML value given for it."""

    key: tuple[str, ...]
    value: Any

    @property
    def name(self) -> str:
        return ".".join(self.key)


def _parse_set(raw: str) -> _Set:
    """Read ``KEY=VALUE``: the key a field of the config, the value YAML (a number is read
    as written where the key takes text).

    A secret key takes only ``${VAR}`` references: a secret on a command line is seen by
    every user of the machine (``ps``) and kept in shell history.
    """
    name, eq, text = raw.partition("=")
    name = name.strip()
    if not eq or not name:
        raise UsageError(f"--set {raw}: give KEY=VALUE, e.g. --set gateway.port=18790")
    key = tuple(name.split("."))
    if key[0] in _OWN_FLAGS:
        raise UsageError(f"--set {name}: use {_OWN_FLAGS[key[0]]}")
    model: type[BaseModel] | None = Config
    secret = False
    kinds: tuple[Any, ...] = ()
    for depth, part in enumerate(key):
        if model is None:
            raise UsageError(f"--set {name}: {'.'.join(key[:depth])} is a value, not a section")
        info = model.model_fields.get(part)
        if info is None:
            raise UsageError(f"--set {name}: no such key (config.example.yaml lists them)")
        secret = part in secret_fields(model)
        annotation = info.annotation
        kinds = (annotation, *get_args(annotation))
        models = [a for a in kinds if isinstance(a, type) and issubclass(a, BaseModel)]
        model = models[0] if models else None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UsageError(f"--set {name}: {problem}") from None
    if isinstance(value, int | float) and str in kinds and not {int, float, bool} & set(kinds):
        value = text.strip()  # a key that takes text: 106540352242922 is the id, not a number
    if secret and not (isinstance(value, str) and ENV_REF.sub("", value).strip() == ""):
        raise UsageError(
            f"--set {name}: a secret: give it as ${{VAR}} (quoted for the shell) and put it "
            "in the environment, never on a command line"
        )
    return _Set(key, value)


def _from_env(value: Any, where: str) -> Any:
    """A string's ``${VAR}`` references filled in from the environment."""
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        if match.group(1) not in os.environ:
            raise UsageError(f"{where}: environment variable {match.group(1)} is not set")
        return os.environ[match.group(1)]

    return ENV_REF.sub(lookup, value)


# --- asking --------------------------------------------------------------------------------------


class _Terminal:
    """Questions on the terminal: answers shown as typed, secrets through :mod:`getpass`."""

    def line(self, question: str, default: str = "") -> str:
        suffix = f" [{default}]" if default else ""
        return input(f"{question}{suffix}: ").strip() or default

    def secret(self, question: str) -> str:
        return getpass.getpass(f"{question} (typing is not shown): ").strip()

    def confirm(self, question: str) -> bool:
        while True:
            answer = input(f"{question} [Y/n]: ").strip().lower()
            if answer in ("", "y", "yes"):
                return True
            if answer in ("n", "no"):
                return False


def _problem(error: Any, hide: Sequence[str] = ()) -> str:
    message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
    for secret in hide:
        if secret:
            message = message.replace(secret, "***")
    return message


def _field_problem(platform: Platform, known: dict[str, Any], name: str) -> str | None:
    """What the block's model says of field ``name`` among the values ``known`` so far."""
    try:
        platform.config.model_validate(known)
    except ValidationError as exc:
        secret = known.get(name) if name in secret_fields(platform.config) else None
        for error in exc.errors():
            if error["loc"][:1] == (name,):
                return _problem(error, [secret] if isinstance(secret, str) else [])
    return None


def _owner_id(platform: Platform, raw: str) -> str:
    """``raw`` as the platform's owner id, in its normal form; ValueError says why not."""
    try:
        return Owner.model_validate({"provider": platform.name, "user_id": raw}).user_id
    except ValidationError as exc:
        raise ValueError(_problem(exc.errors()[0])) from None


def _providers_arg(values: Sequence[str]) -> list[Platform]:
    names = [n.strip().lower() for v in values for n in re.split(r"[,\s]+", v) if n.strip()]
    chosen: list[Platform] = []
    for name in names:
        found = find(name)
        if found is None:
            raise UsageError(
                f"--provider: unknown provider {name!r} (choose from {', '.join(KNOWN_PROVIDERS)})"
            )
        chosen.append(found)
    if not chosen:
        raise UsageError("--provider: name at least one platform")
    return [p for p in PLATFORMS if p in chosen]


def _ready(platform: Platform) -> bool:
    """Whether every secret the platform's block needs is in the environment already."""
    envs = [ask.env for ask in platform.config.asks if ask.env is not None]
    return bool(envs) and all(os.environ.get(env) for env in envs)


@dataclass(slots=True)
class _Init:
    """One run of ``pairbot init``: what was given, what is asked, what it writes."""

    args: argparse.Namespace
    out: Console
    terminal: _Terminal | None
    """None with ``--yes``: nothing is asked."""
    sets: dict[tuple[str, ...], _Set]
    from_env: list[str] = field(default_factory=list)
    """The variables the file names for secrets (they must be set when pairbot starts)."""
    typed: list[str] = field(default_factory=list)
    """The keys whose secret was typed, so the file holds it."""

    def say(self, text: str = "") -> None:
        self.out.print(text)

    def platforms(self) -> list[Platform]:
        given: list[str] = self.args.providers or []
        if given:
            return _providers_arg(given)
        ready = [p for p in PLATFORMS if _ready(p)]
        if self.terminal is None:
            if not ready:
                raise UsageError(
                    "--provider: none given, and no platform's secrets are all in the "
                    f"environment ({', '.join(SECRET_ENVS)})"
                )
            self.say(f"Platforms: {', '.join(p.name for p in ready)} (secrets in the environment)")
            return ready
        self.say(f"Platforms: {', '.join(KNOWN_PROVIDERS)}")
        default = ",".join(p.name for p in ready) or PLATFORMS[0].name
        while True:
            answer = self.terminal.line("Which to connect (comma-separated)", default)
            try:
                return _providers_arg([answer])
            except UsageError as exc:
                self.say(str(exc).removeprefix("--provider: "))

    def block(self, platform: Platform) -> Section:
        """The platform's ``providers.<name>`` block: each of its asks answered."""
        self.say()
        self.say(f"{platform.label} (docs/providers/{platform.name}.md)")
        known: dict[str, Any] = {}
        entries: dict[str, Value | Section] = {}
        for ask in platform.config.asks:
            entries[ask.field] = self.answer(platform, ask, known)
        policy = platform.config.model_fields["dm_policy"].default
        entries["dm_policy"] = Value(
            policy.value,
            "pairing: a stranger gets a code, which an owner approves (allowlist | open | "
            "disabled: config.example.yaml)",
        )
        return Section(entries, f"{platform.label}: docs/providers/{platform.name}.md")

    def answer(self, platform: Platform, ask: Ask, known: dict[str, Any]) -> Value:
        """One ask: from ``--set``, the environment, the prompt, or the field's default."""
        key = ("providers", platform.name, ask.field)
        where = ".".join(key)
        given = self.sets.pop(key, None)
        if given is not None:
            known[ask.field] = _from_env(given.value, f"--set {where}")
            if problem := _field_problem(platform, known, ask.field):
                raise UsageError(f"--set {where}: {problem}")
            self.say(f"  {ask.field}: from --set")
            return Value(given.value, ask.what)
        if ask.env is not None:
            return self.secret(platform, ask, known, where)
        info = platform.config.model_fields[ask.field]
        default = None if info.is_required() else info.default
        while True:
            if self.terminal is None:
                if default is None:
                    raise UsageError(f"{where}: required: give --set {where}=VALUE")
                value: Any = default
            else:
                value = self.terminal.line(f"  {ask.what}", "" if default is None else default)
                if not value:
                    self.say("  required")
                    continue
            known[ask.field] = value
            problem = _field_problem(platform, known, ask.field)
            if problem is None:
                return Value(value, ask.what)
            if self.terminal is None:
                raise UsageError(f"{where}: {problem}")
            self.say(f"  {problem}")

    def secret(self, platform: Platform, ask: Ask, known: dict[str, Any], where: str) -> Value:
        """A secret: a ``${VAR}`` reference when the variable is set, else typed unseen."""
        env = str(ask.env)
        if os.environ.get(env):
            known[ask.field] = os.environ[env]
            if problem := _field_problem(platform, known, ask.field):
                raise UsageError(f"{where}: the value from ${env}: {problem}")
            self.say(f"  {ask.field}: from ${env}")
            self.from_env.append(env)
            return Value(f"${{{env}}}", f"{ask.what}; read from ${env} at each start")
        if self.terminal is None:
            raise UsageError(
                f"{where}: set {env} in the environment (with --yes a secret is read only "
                "from there)"
            )
        self.say(f"  {ask.what}")
        self.say(f"  {env} is not set: type it here, and it is kept in the config file (0600)")
        while True:
            typed = self.terminal.secret(f"  {ask.field}")
            if not typed:
                self.say(f"  required (or set {env} and run pairbot init again)")
                continue
            add_secrets([typed])  # never in a log line, whatever logs it
            known[ask.field] = typed
            problem = _field_problem(platform, known, ask.field)
            if problem is None:
                self.typed.append(where)
                return Value(
                    typed,
                    f"{ask.what}; typed at pairbot init and kept here: to keep it out of this "
                    f"file, export {env} and write ${{{env}}} instead",
                )
            self.say(f"  {problem}")

    def owners(self, platform: Platform, flagged: dict[str, list[str]]) -> list[str]:
        """The platform's owner ids: from ``--owner``, else asked (blank: none)."""
        if platform.name in flagged or self.terminal is None:
            return flagged.get(platform.name, [])
        self.say(f"  Owner: {platform.ids.find}")
        while True:
            answer = self.terminal.line(f"  Your {platform.label} id (blank: none for now)")
            try:
                return [_owner_id(platform, raw) for raw in answer.split(",") if raw.strip()]
            except ValueError as exc:
                self.say(f"  {exc}")


def _owner_flags(values: Sequence[str], chosen: Sequence[Platform]) -> dict[str, list[str]]:
    """``--owner [PROVIDER:]ID`` values by platform, each id in its normal form."""
    found: dict[str, list[str]] = {}
    for raw in values:
        name, colon, rest = raw.partition(":")
        named = find(name.strip().lower()) if colon else None
        if named is not None:
            platform, ident = named, rest
        elif len(chosen) == 1:
            platform, ident = chosen[0], raw
        else:
            raise UsageError(f"--owner {raw}: say the platform: PROVIDER:ID")
        if platform not in chosen:
            raise UsageError(f"--owner {raw}: {platform.name} is not among the platforms chosen")
        try:
            found.setdefault(platform.name, []).append(_owner_id(platform, ident))
        except ValueError as exc:
            raise UsageError(f"--owner {raw}: {exc}") from None
    return found


def _put(tree: Section, key: tuple[str, ...], value: Value, name: str) -> None:
    """Put a ``--set`` value at ``key``, making the sections on the way."""
    section = tree
    for part in key[:-1]:
        node = section.entries.setdefault(part, Section())
        if not isinstance(node, Section):
            raise UsageError(f"--set {name}: {part} is already set as a whole")
        section = node
    section.entries[key[-1]] = value


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Drop ``logger``'s records for the block (the check of a file not yet in place)."""
    log = logging.getLogger(logger)
    before, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = before


def _write(text: str, path: Path, *, force: bool, sets: Sequence[_Set]) -> None:
    """Put ``text`` at ``path`` (0600, atomically), once the real loader accepted it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with staged(path, text.encode("utf-8")) as tmp:
            try:
                with _quiet("bot.runtime.config"):  # its warnings would name the temp file
                    load_config(tmp)
            except ConfigError as exc:
                raise _named(exc, tmp, path, sets) from None
            place(tmp, path, replace=force)
    except FileExistsError:
        raise UsageError(f"--config: {path} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise UsageError(f"--config: cannot write {path}: {exc.strerror or exc}") from None


def _named(exc: ConfigError, tmp: Path, path: Path, sets: Sequence[_Set]) -> UsageError:
    """The loader's refusal of the staged file, said of the flag that gave the value."""
    message = str(exc).removeprefix(f"{tmp}: ")
    field_name = exc.field or ""
    for given in sets:
        if field_name == given.name or field_name.startswith(f"{given.name}."):
            return UsageError(f"--set {given.name}: {message.removeprefix(f'{field_name}: ')}")
    return UsageError(f"{path}: {message}")


def cmd_init(args: argparse.Namespace) -> int:
    """``pairbot init``: write a first config, check it, print the ``pairbot run`` line."""
    out = Console(highlight=False, soft_wrap=True, markup=False)
    config = getattr(args, "config", None)
    path = (Path(config).expanduser() if config else default_config_path()).absolute()
    if path.is_dir():
        raise UsageError(f"--config: {path} is a directory")
    if os.path.lexists(path) and not args.force:
        raise UsageError(f"--config: {path} exists; pass --force to overwrite it")
    terminal = None if args.yes else _Terminal()
    if terminal is not None and not sys.stdin.isatty():
        raise UsageError(
            "--yes: no terminal to ask on; pass --yes with the flags (pairbot init --help)"
        )
    sets = [_parse_set(raw) for raw in args.set or []]
    run = _Init(args, out, terminal, {s.key: s for s in sets})
    try:
        return run_init(run, path, sets)
    except EOFError:
        raise UsageError("input ended at a question; nothing was written") from None


def run_init(run: _Init, path: Path, sets: Sequence[_Set]) -> int:
    """Ask, write, check, and say how to start."""
    args = run.args
    if run.terminal is not None:
        run.say("pairbot init: a first config. Ctrl-C stops; nothing is written until the end.")
    chosen = run.platforms()
    run.from_env += [n for s in sets if isinstance(s.value, str) for n in ENV_REF.findall(s.value)]
    for given in run.sets.values():
        if given.key[0] == "providers" and given.key[1] not in [p.name for p in chosen]:
            raise UsageError(f"--set {given.name}: {given.key[1]} is not among the platforms")
    flagged = _owner_flags(args.owner or [], chosen)
    providers = Section(comment="The platforms pairbot connects to.")
    owners: list[dict[str, str]] = []
    for platform in chosen:
        providers.entries[platform.name] = run.block(platform)
        ids = run.owners(platform, flagged)
        owners += [{"provider": platform.name, "user_id": o} for o in ids]
    state_dir = getattr(args, "state_dir", None) or os.environ.get(STATE_DIR_ENV)
    if state_dir:  # as the bot will read it wherever it starts
        state_dir = str(Path(state_dir).expanduser().absolute())
    tree = Section(
        {
            "state_dir": Value(
                state_dir or DEFAULT_STATE_DIR,
                f"Where pairing state lives (made 0700 on first use); ${STATE_DIR_ENV} and "
                "--state-dir override it.",
            ),
            "owners": Value(
                owners,
                "Who may approve strangers (/approve, the buttons) in their one-to-one chat "
                "with the bot: each platform's immutable user id, never a @username."
                + ("" if owners else ' Nobody yet: add {provider: NAME, user_id: "ID"}.'),
            ),
            "providers": providers,
            "handler": Section(
                {"kind": Value(HandlerConfig().kind)},
                "Where approved senders' messages go: echo answers with what they wrote (to "
                "try pairbot out); forward, webhook or python: config.example.yaml.",
            ),
            "gateway": Section(
                {
                    "enabled": Value(GatewayConfig().enabled),
                    "host": Value(GatewayConfig().host),
                    "port": Value(GatewayConfig().port),
                },
                "Where nodes (devices) ask to pair: docs/gateway-protocol.md. Remote operators "
                "are off (no operator_token: config.example.yaml).",
            ),
        }
    )
    for given in run.sets.values():
        _put(tree, given.key, Value(given.value), given.name)
    text = render(tree, path)
    if yaml.safe_load(text) != tree.plain():  # a value the YAML would not read back as given
        raise UsageError(f"{path}: a value cannot be written as YAML faithfully")
    if run.terminal is not None:
        run.say()
        if not run.terminal.confirm(f"Write {path} (0600)?"):
            run.say("Nothing was written.")
            return EXIT_OK
    _write(text, path, force=bool(args.force), sets=sets)
    _report(run, path, bool(owners))
    status = EXIT_OK if args.skip_doctor else _check(run, path)
    run.say()
    envs = ", ".join(dict.fromkeys(run.from_env))
    needs = f" (with {envs} set, as now)" if envs else ""
    run.say(f"Start pairbot with{needs}:")
    run.say(f"  pairbot run --config {shlex.quote(str(path))}")
    return status


def _report(run: _Init, path: Path, any_owner: bool) -> None:
    run.say()
    run.say(f"Wrote {path} (0600).")
    envs = ", ".join(dict.fromkeys(run.from_env))
    if envs:
        run.say(f"Secrets stay in the environment: the file names {envs} as ${{VAR}}.")
    if run.typed:
        run.say(
            f"Typed secrets ({', '.join(run.typed)}) are kept in the file itself, readable by "
            "you alone; pairbot warns of a literal secret at each start. To keep one out, "
            "export its variable and write ${VAR} in its place (the file's comments name it)."
        )
    if not any_owner:
        run.say("No owner yet: nobody can approve from chat (use pairbot pairing approve).")
    state_env = os.environ.get(STATE_DIR_ENV)
    if state_env and getattr(run.args, "state_dir", None) not in (None, state_env):
        run.say(f"Note: ${STATE_DIR_ENV} is set ({state_env}) and overrides the file's state_dir.")


def _check(run: _Init, path: Path) -> int:
    run.say()
    run.say("Checking it (pairbot doctor):")
    sys.stdout.flush()
    return doctor(path, run.args)
