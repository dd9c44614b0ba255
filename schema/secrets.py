"""The secrets file (``GATEWAYZ_SECRETS_FILE``): provider keys and catalog
placeholders kept out of the environment, in dotenv form.

One ``NAME=value`` per line; blank lines and lines starting with ``#`` are
skipped, a leading ``export`` is allowed, and a value wrapped in matching
single or double quotes loses them. Nothing else is interpreted: the rest of
the line is the value (no inline comments, no escapes, no ``$VARIABLE``
expansion). A variable set in the environment wins over the file.

Values are secrets: no error or log line here ever contains one, only the
file's path and line numbers.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("gatewayz.config")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretsFileError(ValueError):
    """The secrets file cannot be read; the message names the file and line, never a value."""


def read_secrets(path: Path) -> dict[str, str]:
    """The file's variables; a later line wins over an earlier one with the same name."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as error:
        raise SecretsFileError(f"cannot read the secrets file {path}: {error.strerror or error}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Readable by others is allowed (containers mount secrets in many ways), but worth a word.
        log.warning("the secrets file %s is accessible to other users (mode %o): chmod 600 it", path,
                    stat.S_IMODE(mode))
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped.removeprefix("export ").lstrip()
        name, equals, value = stripped.partition("=")
        name = name.strip()
        if not equals or not _NAME.fullmatch(name):
            raise SecretsFileError(f"{path}, line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        variables[name] = value
    return variables


def with_secrets(environ: Mapping[str, str], path: Path | None) -> dict[str, str]:
    """The variables the catalog reads: the secrets file's, overridden by
    every non-empty variable of ``environ``."""
    merged = read_secrets(path) if path is not None else {}
    merged.update((name, value) for name, value in environ.items() if value)
    return merged
