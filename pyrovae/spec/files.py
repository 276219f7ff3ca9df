"""Run specs in TOML files: :func:`read_spec` (``pyrovae fit --config``) and :func:`spec_to_toml`
(``pyrovae fit --print-config``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .plugins import import_plugins
from .run import RunSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_spec(path: str | Path) -> RunSpec:
    """The :class:`RunSpec` in the TOML file ``path``; a missing, unreadable, empty or malformed
    file, and every key the spec refuses, is one :class:`~pyrovae.errors.ConfigError` naming the file.
    The file's ``plugins`` are imported first (:func:`~pyrovae.spec.plugins.import_plugins`)."""
    return read_run_file(path)[0]


def read_run_file(path: str | Path) -> tuple[RunSpec, dict[str, Any]]:
    """:func:`read_spec`'s spec, and the values the file itself writes (nested as in the file), so
    that a caller can tell a key the file sets from one left to its default."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a directory: give a .toml file") from None
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not a UTF-8 text file: expected a TOML run spec") from None
    if not text.strip():
        raise ConfigError(f"--config {path} is empty: expected a TOML run spec (pyrovae fit --print-config writes one)")
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config {path} is not valid TOML ({error}): is it cut short?") from None
    if not values:
        raise ConfigError(f"--config {path} is empty (comments only): expected a TOML run spec")
    try:
        # (the plugins first: the names they register are names the sections may use)
        import_plugins(values.get("plugins", []), f"--config {path}: plugins:")
        return RunSpec.from_dict(values), values
    except ConfigError as error:
        if str(error).startswith(f"--config {path}"):
            raise
        raise ConfigError(f"--config {path}: {error}") from None


def spec_to_toml(spec: RunSpec) -> str:
    """``spec`` as a TOML document that :func:`read_spec` reads back to an equal spec."""
    import tomli_w

    header = "# a pyrovae run spec: pyrovae fit --config THIS_FILE (command-line options override it)\n"
    return header + tomli_w.dumps(spec.to_dict(), multiline_strings=False)
