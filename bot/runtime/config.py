"""Reading the configuration: a YAML file and the environment in, a validated
:class:`~bot.core.config.Config` out, or one line saying what is wrong.

``${VAR}`` in any string is read from the environment (its value is registered with the log
redaction and never echoed in an error). Secrets belong in the environment: a literal token
in the file is accepted with a warning. The models themselves live in :mod:`bot.core.config`.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError

from bot.core.config import SECRET_KEYS, Config
from bot.core.errors import ConfigError
from bot.core.schema import InvalidValue
from bot.runtime.logs import add_secrets

log = logging.getLogger(__name__)

CONFIG_ENV = "PAIRBOT_CONFIG"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""``${NAME}`` in a config string: read from the environment (group 1 is the name)."""


def _interpolate(
    value: Any, path: str, source: str, used: dict[str, dict[str, str]] | None = None
) -> Any:
    """Replace each ``${VAR}``; note in ``used`` which variables (and values) each path took."""
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), source, used)
            for k, v in value.items()
        }
    if isinstance(value, list):
        # owners.0.user_id: the same dotted form validation errors use.
        return [_interpolate(v, f"{path}.{i}", source, used) for i, v in enumerate(value)]
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"environment variable {name} is not set", source=source, field=path
                )
            if used is not None:
                used.setdefault(path, {})[name] = os.environ[name]
            return os.environ[name]

        return ENV_REF.sub(lookup, value)
    return value


def _env_refs(value: Any) -> set[str]:
    """The names of the environment variables ``${NAME}`` in the raw config."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(_env_refs(v) for v in value))
    return set(ENV_REF.findall(value)) if isinstance(value, str) else set()


def _warn_literal_secrets(value: Any, path: str, source: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in SECRET_KEYS and isinstance(item, str) and item and "${" not in item:
                log.warning("%s: %s holds a literal secret; use ${ENV_VAR} instead", source, where)
            _warn_literal_secrets(item, where, source)


def load_config(path: Path) -> Config:
    """Load and validate a config file; any problem raises one-line :class:`ConfigError`."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", source=source) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"not valid YAML: {problem}{where}", source=source) from None
    except RecursionError:  # the parser, like the walks below, recurses once per level
        raise ConfigError("nested too deeply to be a config", source=source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("top level must be a mapping of keys", source=source)
    used: dict[str, dict[str, str]] = {}
    try:
        _warn_literal_secrets(raw, "", source)
        data = _interpolate(raw, "", source, used)
        add_secrets(os.environ[name] for name in _env_refs(raw))  # never logged, whatever key
        return Config.model_validate(data)
    except RecursionError:
        raise ConfigError("nested too deeply to be a config", source=source) from None
    except ValidationError as exc:
        field, message = _explain(exc.errors()[0], used)
        raise ConfigError(message, source=source, field=field or None) from None


_MASK_FROM = 6
"""Environment values this long are masked wherever they appear in an error; shorter ones
("1", "json") would also hit words and numbers the message says on its own."""


def _explain(error: Any, used: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    """The field and one-line message of a validation error, with no environment value in it.

    A refused value that came from ``${VAR}`` is named by its variable: a templated message
    says "the value from ${VAR}" where it would quote the value, any other gets the variable
    appended. Last, any longer environment value still in the text is masked: a secret is
    never echoed, however a message was built.
    """
    field = ".".join(str(part) for part in error["loc"])
    message = " ".join(error["msg"].removeprefix("Value error, ").split())
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    cause = (error.get("ctx") or {}).get("error")
    refused = cause.value if isinstance(cause, InvalidValue) else error.get("input")
    names: list[str] = []
    if isinstance(refused, str):
        for path, variables in used.items():
            if field and path != field and not path.startswith(f"{field}."):
                continue
            names += [
                name
                for name, value in variables.items()
                if value and (value in refused or refused in value)
            ]
    if names:
        where = "the value from " + ", ".join(f"${{{name}}}" for name in dict.fromkeys(names))
        if isinstance(cause, InvalidValue) and "{value}" in cause.template:
            message = " ".join(cause.template.replace("{value}", where).split())
        else:
            message = f"{message} ({where})"
    for variables in used.values():
        for name, value in variables.items():
            if len(value) >= _MASK_FROM:
                message = message.replace(value, f"${{{name}}}")
    return field, message


NO_OWNERS = "no owners configured: nobody can approve from chat; use the CLI"
"""Said by ``pairbot run`` at start (a warning) and by ``pairbot doctor``."""


class ModeVerdict(StrEnum):
    """What the config file's mode means for starting."""

    OK = "ok"
    WARN = "warn"
    """Others can read it: it may hold secrets."""
    REFUSE = "refuse"
    """Others can write it: they could make themselves owner."""


class FileModeCheck(NamedTuple):
    """The config file's mode judged (:class:`ModeVerdict`); ``message`` says why in one line."""

    verdict: ModeVerdict
    message: str


def check_file_mode(path: Path) -> FileModeCheck:
    """Judge who besides its owner may read or write the config file.

    Writable by group or others: refused, since the owners list is in it. Readable: a
    warning, since tokens may be in it (or in the environment it names).
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        return FileModeCheck(
            ModeVerdict.REFUSE,
            f"group or others can write it (mode {mode:04o}), and "
            "whoever can write it can make themselves owner (chmod 600 the "
            "file)",
        )
    if mode & 0o044:
        return FileModeCheck(
            ModeVerdict.WARN,
            f"group or others can read it (mode {mode:04o}), and it "
            "may hold secrets (chmod 600 the file)",
        )
    return FileModeCheck(ModeVerdict.OK, f"mode {mode:04o}, only its owner can read or write it")


def find_config(explicit: str | None) -> Path | None:
    """Return the config path from ``--config`` or ``$PAIRBOT_CONFIG``, if either is set."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen).expanduser() if chosen else None
