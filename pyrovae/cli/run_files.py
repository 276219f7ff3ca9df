"""Run files on the command line: ``pyrovae fit --config RUN.toml`` (the file's spec, with the options
typed on the command line over it) and ``--print-config``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from ..errors import PyrovaeError
from ..spec import FLAT_KEYS, RunSpec
from ..spec.files import read_run_file

if TYPE_CHECKING:
    from ..config import FitConfig

CONFIG_FILE = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="RUN.toml",
    help="Read the run's options from this TOML run spec (as --print-config writes it); options given on "
    "the command line override the file's.",
)
PRINT_CONFIG = click.option(
    "--print-config",
    is_flag=True,
    help="Print the whole run spec these options (and --config) make, as TOML, and exit without training.",
)


def fit_config(ctx: click.Context, options: dict[str, object], config_file: str | None) -> FitConfig:
    """The run's checked :class:`~pyrovae.config.FitConfig`: the spec of ``config_file`` (when given)
    with the options typed on the command line over it, else every option's value. A value of the
    file that the checks refuse is named by its key in the file."""
    from ..config import FitConfig

    if config_file is None:
        return FitConfig(**options)  # type: ignore[arg-type]
    source = ctx.get_parameter_source
    given = {name: value for name, value in options.items() if source(name) == ParameterSource.COMMANDLINE}
    base, written = read_run_file(config_file)
    given.update(_dataset_defaults(given, base, written))
    if "plugins" in given:  # (the file's plugins are imported already: those of the command line come after them)
        given["plugins"] = (*base.plugins, *(p for p in given["plugins"] if p not in base.plugins))  # type: ignore[union-attr]
    spec = RunSpec.from_flat(given, base=base)
    try:
        return FitConfig(**spec.to_flat())
    except PyrovaeError as error:
        name = str(error).split(" ", 1)[0]
        key = FLAT_KEYS.get(name, "").replace("*", spec.objective.name)
        where = f" ({config_file}: {key})" if key and name not in given else ""
        raise type(error)(f"{error}{where}") from None


def _dataset_defaults(given: dict[str, object], base: RunSpec, written: dict[str, object]) -> dict[str, object]:
    """The options the run's data set sets (``celeba``: conv networks, the discretized logistic,
    64x64) that neither the command line (``given``) nor the run file sets."""
    from ..spec.datasets import dataset_defaults

    dataset = str(given.get("dataset", base.data.dataset))

    def in_file(name: str) -> bool:
        section: object = written
        for part in FLAT_KEYS.get(name, name).split("."):
            if not isinstance(section, dict) or part not in section:
                return False
            section = section[part]
        return True

    return {name: value for name, value in dataset_defaults(dataset).items() if name not in given and not in_file(name)}
