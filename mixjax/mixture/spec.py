"""The question a mixture search answers, apart from the law: one object for every mixture entry point.

:class:`MixtureSpec` holds the scale (N in **millions of parameters**, D in **billions of tokens**, or raw counts),
the objective over the predicted losses, the bounds (floors, ceilings, unique tokens and their repetition cap), the
measured mixtures and the constraint terms of a phased search. Build it once and pass it as ``spec=`` to
:func:`mixjax.optimize_mixture`, :func:`mixjax.optimize_mixture_ensemble` and :func:`mixjax.calibrate_optimum`, so
that the point optimum, the bootstrap members' optima and the calibration answer the same question (the
calibration refuses an ensemble made at another scale, objective or bounds); :func:`mixjax.suggest` takes its
scale, objective and bounds. Solver settings (``starts``, ``seed``,
``steps``, ``method``, ``step_size``) stay arguments of each call, as in optimistix a problem and its solver are
separate. Values are checked when a search uses them, with the messages of the keyword arguments they stand for.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["MixtureSpec", "accepts_spec"]


@dataclasses.dataclass(frozen=True)
class MixtureSpec:
    """What a mixture search asks, apart from the law (each field as the keyword argument of the same name of
    :func:`mixjax.optimize_mixture`).

    Attributes:
      model_size, n_tokens: the scale in the laws' units (millions of parameters, billions of tokens);
        ``raw_model_size``, ``raw_n_tokens``: the same as raw counts (give one form of each).
      objective, target_weights, target: the scalar objective over the predicted losses ("mean", a weighted mean,
        one target, or a differentiable callable).
      floors, ceilings: per-domain bounds on the weights (a scalar, a sequence, or a {domain: value} mapping);
        ``unique_tokens`` and ``max_epochs``: the data-availability ceiling ``h_i D <= max_epochs U_i``.
      measured, within_measured: the measured mixtures (for the extrapolation report) and whether to stay within
        their per-domain range.
      phase_shares, prior, kl_penalty, max_kl, trust_radius: the constrained search (training phases, KL to a prior,
        trust region around measured runs); not calibrated by :func:`mixjax.calibrate_optimum`.
    """

    model_size: float | None = None
    n_tokens: float | None = None
    raw_model_size: float | None = None
    raw_n_tokens: float | None = None
    objective: str | Callable = "mean"
    target_weights: Any = None
    target: str | int | None = None
    floors: Any = None
    ceilings: Any = None
    unique_tokens: Any = None
    max_epochs: Any = None
    measured: Any = None
    within_measured: bool = False
    phase_shares: Any = None
    prior: Any = None
    kl_penalty: float | None = None
    max_kl: float | None = None
    trust_radius: float | None = None

    def replace(self, **changes) -> MixtureSpec:
        """A copy with some fields changed (e.g. another scale for the same question)."""
        return dataclasses.replace(self, **changes)

    def given(self) -> dict[str, Any]:
        """The fields set to something other than their default, as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not f.default}


def accepts_spec(fn: Callable) -> Callable:
    """Give a mixture entry point a keyword-only ``spec`` (:class:`MixtureSpec`) that stands for its keyword
    arguments of the same names. An argument given both ways, or a field the entry point does not take, is refused."""
    sig = inspect.signature(fn)
    takes = {f.name for f in dataclasses.fields(MixtureSpec)} & set(sig.parameters)

    @functools.wraps(fn)
    def with_spec(*args, spec: MixtureSpec | None = None, **kwargs):
        if spec is None:
            return fn(*args, **kwargs)
        if not isinstance(spec, MixtureSpec):
            raise TypeError(f"{fn.__name__}: spec must be a mixjax.MixtureSpec, got {type(spec).__name__}")
        fields = spec.given()
        both = sorted(set(fields) & set(kwargs))
        if both:
            raise ValueError(f"{fn.__name__}: {', '.join(both)} given both as argument(s) and in spec; give each once")
        foreign = sorted(set(fields) - takes)
        if foreign:
            raise ValueError(f"{fn.__name__} does not take {', '.join(foreign)} (set in spec)")
        return fn(*args, **kwargs, **fields)

    extra = inspect.Parameter("spec", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="MixtureSpec | None")
    plain = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    rest = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    with_spec.__signature__ = sig.replace(parameters=[*plain, extra, *rest])
    return with_spec
