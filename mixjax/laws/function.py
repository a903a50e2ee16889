"""A law from a plain JAX function and a parameter PyTree: no class to write.

::

    def kaplan(p, N, D):                     # N, D: one run; p: the parameter PyTree
        return p["E"] + jnp.exp(p["a"] - p["alpha"] * jnp.log(N)) + jnp.exp(p["b"] - p["beta"] * jnp.log(D))

    law = mixjax.law_from_function(kaplan, {"E": 1.8, "a": 6.0, "alpha": 0.3, "b": 7.0, "beta": 0.3}, name="kaplan",
                                   units="raw")
    fit = mixjax.fit(law, data, starts=64, objective="huber_log")

``fn(params, N, D) -> loss`` (or ``fn(params, h, N, D)`` with ``mixture=True``, h the run's mixture ``(K,)``) predicts
one run: a scalar, or a ``(V,)`` vector for a table of V loss columns (give each parameter a trailing axis of length
V to fit the columns independently). Every inexact leaf of ``params`` is free; the function sees it exactly as
given (unconstrained: write ``jnp.exp(p["log_A"])`` where a parameter must stay positive).

Units of N and D inside ``fn``: ``units="laws"`` (default) is the unit of every mixjax law, millions of parameters
and billions of tokens; ``units="raw"`` passes raw counts (N = 1e9 for a 1B model), the unit of most published fits.

The returned law is an ordinary :class:`~mixjax.AbstractLaw` (an equinox module with one field, ``theta``, the
PyTree), so :func:`mixjax.fit`, :func:`mixjax.bootstrap`, ``predict`` and :func:`mixjax.save_fit` take it unchanged:
the engine vmaps over the PyTree, one batch member per start or resample. Starting points: the given values are
start 0; the others are drawn around them, ``x + 0.3 (|x| + 0.1) z`` per leaf, z standard normal (or pass a batch of
starts, ``law.with_params(batched_params)``, as ``init=``).

Saving: a fit file records the law's *name*, not its code. :func:`mixjax.save_fit` refuses an unregistered function
law with a message; register the class first (``mixjax.register(type(law))``). To load the file in another
program, build the law again with the same function and parameter structure and register it before
:func:`mixjax.load_fit` (a module that does both on import is the simple way); a parameter PyTree whose names or
shapes differ from the saved ones is refused on load.
"""

from __future__ import annotations

import re
from typing import Any, Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._base import AbstractLaw, DataSummary

__all__ = ["FunctionLaw", "law_from_function"]

_UNITS = {"laws": (1.0, 1.0), "raw": (1e6, 1e9)}  # factors from the laws' units (M params, B tokens) to fn's units


class FunctionLaw(AbstractLaw):
    """Base class of the laws built by :func:`law_from_function`; each call makes a subclass that holds the
    function, its options and the starting values as class attributes, so that an instance holds only the
    parameter PyTree ``theta`` (what the engine fits and a fit file stores)."""

    theta: Any

    per_domain: ClassVar[bool] = False
    uses_mixture: ClassVar[bool] = False
    function: ClassVar[Callable]
    start: ClassVar[Any]
    unit_factors: ClassVar[tuple[float, float]] = (1.0, 1.0)
    readable: ClassVar[Callable | None] = None

    def __call__(self, mixture, model_size, n_tokens):
        fn = type(self).function
        N = model_size * self.unit_factors[0]
        D = n_tokens * self.unit_factors[1]
        out = fn(self.theta, mixture, N, D) if self.uses_mixture else fn(self.theta, N, D)
        out = jnp.asarray(out)
        if out.ndim > 1:
            raise ValueError(f"law {self.name!r}: the function returned shape {out.shape}; return a scalar or a (V,) vector of losses")
        return jnp.atleast_1d(out)

    def params(self) -> dict[str, jax.Array]:
        """Readable values: ``readable(theta)`` when given, else every leaf of ``theta`` under its path
        (``E`` for ``{"E": ...}``, ``mlp.w`` for nested dicts, ``0`` for lists)."""
        if self.readable is not None:
            return dict(type(self).readable(self.theta))
        return dict(zip(_leaf_names(self.theta), jax.tree_util.tree_leaves(self.theta)))

    def with_params(self, theta) -> FunctionLaw:
        """The same law with other parameter values (same structure; leaves may carry a leading batch axis, e.g.
        a grid of starting points for ``mixjax.fit(..., init=law.with_params(grid))``)."""
        return type(self)(_as_float_tree(theta, self.name))

    @classmethod
    def init(cls, key, summary: DataSummary) -> FunctionLaw:
        """A start drawn around the given values: ``x + 0.3 (|x| + 0.1) z`` per leaf. Checks first that the
        function's output has one loss per loss column of the data (``summary.n_targets``)."""
        _check_output(cls, summary)
        leaves, treedef = jax.tree_util.tree_flatten(cls.start)
        keys = jax.random.split(key, max(len(leaves), 1))
        moved = [x + 0.3 * (jnp.abs(x) + 0.1) * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
        return cls(jax.tree_util.tree_unflatten(treedef, moved))


def _leaf_names(tree) -> list[str]:
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = []
        for k in path:
            for attr in ("key", "name", "idx"):
                if hasattr(k, attr):
                    parts.append(str(getattr(k, attr)))
                    break
            else:
                parts.append(str(k))
        names.append(".".join(parts) or "theta")
    return names


def _as_float_tree(params, name: str):
    """Every leaf as a floating-point JAX array; anything that is not a number is an error naming its path."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not flat:
        raise ValueError(f"law {name!r}: params has no leaves; give a PyTree (dict, list, tuple) of numbers or arrays")
    out = []
    for path, leaf in flat:
        try:
            a = np.asarray(leaf)
        except Exception:  # noqa: BLE001 - any object numpy cannot read is reported the same way
            a = np.asarray(None)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"law {name!r}: parameter {jax.tree_util.keystr(path) or 'params'} is {leaf!r}, not a number or numeric array")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"law {name!r}: parameter {jax.tree_util.keystr(path) or 'params'} is not finite: {leaf!r}")
        out.append(jnp.asarray(leaf, dtype=jnp.result_type(float)))
    return jax.tree_util.tree_unflatten(treedef, out)


def _check_output(cls: type[FunctionLaw], summary: DataSummary) -> None:
    """The function's output for one run of the data, by shape only: a scalar or (V,) with V loss columns."""
    K = int(summary.n_domains)
    h = jax.ShapeDtypeStruct((K,), jnp.result_type(float))
    x = jax.ShapeDtypeStruct((), jnp.result_type(float))
    law = cls(cls.start)
    try:
        out = eqx.filter_eval_shape(law, h, x, x)
    except Exception as e:  # noqa: BLE001 - the user's function may raise anything; report it with the shapes
        form = "fn(params, h, N, D) with h of shape (%d,)" % K if cls.uses_mixture else "fn(params, N, D)"
        raise ValueError(f"law {cls.name!r}: {form} fails on one run of the data: {type(e).__name__}: {e}") from None
    V = int(summary.n_targets)
    if out.shape != (V,):
        n = out.shape[0]
        hint = (" (give each parameter a trailing axis of length %d, one value per loss column, or fit one column)" % V) if n == 1 else ""
        raise ValueError(f"law {cls.name!r} predicts {n} loss(es) per run, but the data has {V} loss column(s){hint}")


def law_from_function(
    fn: Callable,
    params,
    *,
    name: str,
    mixture: bool = False,
    units: str = "laws",
    readable: Callable | None = None,
    reference: str = "",
    uses_model_size: bool = True,
    uses_tokens: bool = True,
) -> FunctionLaw:
    """A law from ``fn(params, N, D) -> loss`` (``fn(params, h, N, D)`` with ``mixture=True``) and its starting
    parameter PyTree; see the module docstring.

    Args:
      fn: a traceable JAX function of one run; returns a scalar or a ``(V,)`` vector (one loss per loss column).
      params: a PyTree of numbers or arrays (the starting values; their structure is the law's parameters).
      name: the law's short name (fit info, saved fits, ``mixjax.register``).
      mixture: whether ``fn`` takes the run's mixture h ``(K,)`` as its second argument.
      units: ``"laws"`` (N in millions of parameters, D in billions of tokens) or ``"raw"`` (raw counts).
      readable: optional ``readable(theta) -> dict`` of readable values (for example exponentiated logs), used by
        ``params()``, bootstrap intervals and the command line; default: every leaf by its path.
      uses_model_size, uses_tokens: whether predictions need N / D (rows where it is unknown are then refused).
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"name must be a short identifier (letters, digits, _ . -), got {name!r}")
    if units not in _UNITS:
        raise ValueError(f"units must be one of {sorted(_UNITS)}, got {units!r}")
    if readable is not None and not callable(readable):
        raise TypeError(f"readable must be a function of the parameters, got {type(readable).__name__}")
    start = _as_float_tree(params, name)
    title = "".join(p[:1].upper() + p[1:] for p in re.split(r"[_.\-]", name) if p) + "Law"
    attrs = {
        "name": name,
        "reference": reference or f"user function {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
        "uses_mixture": bool(mixture),
        "uses_model_size": bool(uses_model_size),
        "uses_tokens": bool(uses_tokens),
        "function": staticmethod(fn),
        "start": start,
        "unit_factors": _UNITS[units],
        "readable": None if readable is None else staticmethod(readable),
        "__module__": getattr(fn, "__module__", __name__),
        "__qualname__": title,
    }
    cls = type(title, (FunctionLaw,), attrs)
    return cls(start)
