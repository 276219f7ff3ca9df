"""ArviZ in both of its lines, behind two functions: :func:`from_dict` and :func:`arviz_versions`.

- ArviZ 0.x (what Python 3.11 resolves ``arviz`` to) is one package whose ``arviz.from_dict(
  posterior=..., sample_stats=..., ...)`` returns an ``InferenceData``.
- ArviZ >= 1.0 (what Python >= 3.12 resolves it to) is a meta-package over arviz-base,
  arviz-stats and arviz-plots; ``arviz_base.from_dict({group: {name: array}}, ...)`` returns an
  ``xarray.DataTree``.

Both results expose their groups as attributes (``.posterior``, ``.sample_stats``) with ``.attrs``,
and both write netCDF with ``.to_netcdf(path)``, which needs the h5netcdf (or netCDF4) engine:
ArviZ 0.x installs h5netcdf itself, ArviZ 1.x leaves it to an extra, so pyrovae requires it.
The line is chosen by the installed ``arviz`` package's major version, so an ArviZ 0.x
installation that also has arviz-base (its ``preview`` extra) keeps the 0.x behaviour.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from ..errors import DependencyError

__all__ = ["from_dict", "arviz_versions", "arviz_major", "check_arviz"]


def _arviz() -> Any:
    """The ``arviz`` module; a missing or broken installation (an ArviZ 1.x without one of its own
    packages raises while importing) is one :class:`~pyrovae.errors.DependencyError`."""
    try:
        with warnings.catch_warnings():  # arviz 0.2x announces its refactor with a FutureWarning on import
            warnings.simplefilter("ignore", FutureWarning)
            import arviz

            if int(arviz.__version__.split(".")[0]) >= 1:
                import arviz_base  # noqa: F401 (what ArviZ >= 1 builds its data with)
    except Exception as error:  # noqa: BLE001 (whatever a broken installation raises while importing)
        raise DependencyError(
            f"ArviZ cannot be imported ({type(error).__name__}: {error}): --inference-data needs it; reinstall it "
            "with: pip install --upgrade arviz"
        ) from error
    return arviz


def check_arviz() -> None:
    """Refuse now, in one line, what :func:`from_dict` would fail on later: ArviZ missing or broken."""
    _arviz()


def arviz_major() -> int:
    """The major version of the installed ``arviz`` package: 0 for the 0.x line, >= 1 for the refactored one."""
    return int(_arviz().__version__.split(".")[0])


def arviz_versions() -> dict[str, str]:
    """``{"arviz": version}``, and ``"arviz_base"`` too on ArviZ >= 1 (it builds the data); for records
    (``"not available"`` where ArviZ cannot be imported: evaluation needs it only for netCDF files).

    Where ArviZ has not been imported, the versions are read from the installed packages' metadata,
    without importing it (which takes seconds)."""
    if "arviz" not in sys.modules:
        try:
            versions = {"arviz": metadata.version("arviz")}
            if int(versions["arviz"].split(".")[0]) >= 1:
                versions["arviz_base"] = metadata.version("arviz-base")
            return versions
        except (metadata.PackageNotFoundError, ValueError):
            pass  # not installed as a distribution, or an odd version: ask the module itself
    try:
        versions = {"arviz": _arviz().__version__}
    except DependencyError:
        return {"arviz": "not available"}
    if arviz_major() >= 1:
        import arviz_base

        versions["arviz_base"] = arviz_base.__version__
    return versions


def from_dict(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    coords: Mapping[str, Sequence[Any]],
    dims: Mapping[str, Sequence[str]],
) -> Any:
    """ArviZ data from ``{group: {variable: array}}``; arrays of sampled groups lead with ``(chain, draw)``.

    :returns: an ``arviz.InferenceData`` (ArviZ 0.x) or an ``xarray.DataTree`` (ArviZ >= 1);
        both have the groups as attributes and ``.to_netcdf(path)``.
    """
    if arviz_major() >= 1:
        import arviz_base

        return arviz_base.from_dict(dict(groups), coords=dict(coords), dims=dict(dims))
    return _arviz().from_dict(**groups, coords=dict(coords), dims=dict(dims))
