"""Scaling laws for data mixtures. Every law is an :class:`AbstractLaw` (an ``equinox.Module``)."""

from ._allocation import capacity_allocation as capacity_allocation
from ._allocation import log_capacity_allocation as log_capacity_allocation
from ._base import AbstractLaw as AbstractLaw
from ._base import DataSummary as DataSummary
from ._base import n_params as n_params
from ._base import param_names as param_names
from .capacity_noise import CapacityNoiseLaw as CapacityNoiseLaw

#: Laws by their short name (``law.name``); used by the command line and by saved fits.
LAWS: dict[str, type[AbstractLaw]] = {}


def register(cls: type[AbstractLaw]) -> type[AbstractLaw]:
    """Make a law class available by its ``name`` (to :func:`get_law`, the command line and saved fits)."""
    LAWS[cls.name] = cls
    return cls


def get_law(name: str) -> type[AbstractLaw]:
    """The law class registered under ``name``."""
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; available: {sorted(LAWS)}") from None


for _cls in (CapacityNoiseLaw,):
    register(_cls)
