"""Scaling laws for data mixtures. Every law is an :class:`AbstractLaw` (an ``equinox.Module``)."""

import contextlib
from collections.abc import Mapping
from types import MappingProxyType

from ._allocation import capacity_allocation as capacity_allocation
from ._allocation import log_capacity_allocation as log_capacity_allocation
from ._base import AbstractLaw as AbstractLaw
from ._base import DataSummary as DataSummary
from ._base import n_params as n_params
from ._base import param_names as param_names
from .capacity_noise import CapacityNoiseLaw as CapacityNoiseLaw
from .capacity_pseudocount import CapacityNoisePseudoCountLaw as CapacityNoisePseudoCountLaw
from .autoscale import AutoScaleLaw as AutoScaleLaw
from .bimix import BiMixLaw as BiMixLaw
from .capacity_variants import CapacityOnlyLaw as CapacityOnlyLaw
from .capacity_variants import CapacityRunTokensLaw as CapacityRunTokensLaw
from .chinchilla import ChinchillaLaw as ChinchillaLaw
from .chinchilla import chinchilla_grid as chinchilla_grid
from .chinchilla_mixture import ChinchillaMixtureLaw as ChinchillaMixtureLaw
from .chinchilla_mixture import ChinchillaMixturePerTargetLaw as ChinchillaMixturePerTargetLaw
from .exponential import ExponentialLaw as ExponentialLaw
from .exposure import ExposureLaw as ExposureLaw
from .exposure import JointExposureLaw as JointExposureLaw
from .function import FunctionLaw as FunctionLaw
from .function import law_from_function as law_from_function
from .loglinear import LogLinearLaw as LogLinearLaw
from .power_linear import PowerLinearLaw as PowerLinearLaw
from .shukor import ShukorAdditiveLaw as ShukorAdditiveLaw
from .shukor import ShukorJointLaw as ShukorJointLaw
from .shukor import ShukorMixtureLaw as ShukorMixtureLaw

_REGISTRY: dict[str, type[AbstractLaw]] = {}

#: Laws by their short name (``law.name``); used by the command line and by saved fits. A read-only view: change it
#: with :func:`register` and :func:`unregister` (or :func:`registered` for a block of code).
LAWS: Mapping[str, type[AbstractLaw]] = MappingProxyType(_REGISTRY)


def register(cls: type[AbstractLaw]) -> type[AbstractLaw]:
    """Make a law class available by its ``name`` (to :func:`get_law`, the command line and saved fits). Usable as
    a class decorator. Registering another class under a taken name replaces it, with a warning (re-running a
    notebook cell that defines a law does this)."""
    if not (isinstance(cls, type) and issubclass(cls, AbstractLaw)):
        raise TypeError(f"register takes an AbstractLaw subclass, got {cls!r}")
    old = _REGISTRY.get(cls.name)
    if old is not None and old is not cls:
        import warnings

        warnings.warn(f"law name {cls.name!r} was registered to {old.__module__}.{old.__qualname__}; now to "
                      f"{cls.__module__}.{cls.__qualname__}", stacklevel=2)
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove the law registered under ``name`` (no error if there is none)."""
    _REGISTRY.pop(name, None)


@contextlib.contextmanager
def registered(cls: type[AbstractLaw]):
    """Register ``cls`` for the duration of a ``with`` block (restoring what was there before)."""
    before = _REGISTRY.get(cls.name)
    _REGISTRY.pop(cls.name, None)
    register(cls)
    try:
        yield cls
    finally:
        _REGISTRY.pop(cls.name, None)
        if before is not None:
            _REGISTRY[cls.name] = before


def get_law(name: str) -> type[AbstractLaw]:
    """The law class registered under ``name``."""
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; available: {sorted(LAWS)}") from None


for _cls in (
    CapacityNoiseLaw,
    CapacityOnlyLaw,
    CapacityRunTokensLaw,
    CapacityNoisePseudoCountLaw,
    ExponentialLaw,
    BiMixLaw,
    ShukorMixtureLaw,
    ShukorAdditiveLaw,
    ShukorJointLaw,
    ChinchillaLaw,
    ChinchillaMixtureLaw,
    ChinchillaMixturePerTargetLaw,
    LogLinearLaw,
    AutoScaleLaw,
    PowerLinearLaw,
    ExposureLaw,
    JointExposureLaw,
):
    register(_cls)
