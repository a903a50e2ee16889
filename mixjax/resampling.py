"""Bootstrap uncertainty: refit a law on resampled data, all resamples and starts in one batched call.

A resample is a vector of row multiplicities ``w`` (multinomial counts), so the refit minimizes the weighted
objective of :mod:`mixjax.fitting`::

    J_w(theta) = sum_r w_r sum_j m_rj rho(pred_rj(theta), y_rj) / sum_r w_r sum_j m_rj.

Schemes (n rows):

* ``"rows"``: ``w ~ Multinomial(n, 1/n)``: independent runs.
* ``"mixtures"``: the G distinct ``mixture_id`` are drawn G times with replacement; every row of a mixture (all
  its checkpoints and scales) gets the multiplicity of its mixture. Use it when rows of one mixture are not
  independent (checkpoints of one run).
* ``"stratified"``: within each (model_size, n_tokens) scale with n_s rows, ``w ~ Multinomial(n_s, 1/n_s)``:
  every scale keeps its row count.

R resamples x S starts are fitted by ONE call of :func:`mixjax.fitting.solve` (a batch of R*S members, optionally in
chunks of one compiled shape); each resample keeps its best start (:func:`mixjax.fitting.best_of`). With
``warm_start`` (default) start 0 of every resample is the full-data fit, the others are random draws of
``law.init``. A resample whose starts all failed (non-finite) is counted in ``n_failed`` and excluded from every
interval.

Intervals, for any derived quantity ``t = fn(law)`` (elementwise over its arrays), level ``1 - 2 alpha``:

* ``"percentile"``: the alpha and 1 - alpha quantiles of t over usable resamples (linear interpolation between
  order statistics, as ``numpy.quantile``).
* ``"bca"`` (Efron 1987): quantiles at ``Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q)))`` with bias correction
  ``z0 = Phi^-1(#{t* < t_hat} / R)`` (ties count half) and acceleration from the jackknife,
  ``a = sum d_i^3 / (6 (sum d_i^2)^(3/2))``, ``d_i = mean(t_(.)) - t_(i)``. The jackknife leaves out one unit
  (a row; a whole mixture for the ``"mixtures"`` scheme): U more fits (U = rows or mixtures), one start each
  from the full-data fit, in one more batched call. It is computed once on first use and cached.

Everything is reproducible from ``seed``: same seed, settings and layout, bit-identical result. Every resample
and start draws from the seed and its own index (:func:`resample_weights`, :func:`mixjax.fitting.init_starts`),
so another ``chunk_size``, device count, process count (:mod:`mixjax.distributed`) or a run in slices joined by
:func:`merge` fits the same resamples from the same starts; the numbers then agree up to rounding (programs compiled
for other batch shapes round differently).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import distributed, intervals
from .distributed import check_slice, slice_range
from .data import DataError, MixtureData, data_fingerprint
from .fitting import (
    Fit,
    FitArrays,
    FitConfig,
    MaxStepsWarning,
    check_batch_memory,
    check_first_start,
    best_of,
    check_seed,
    default_dtype,
    fit,
    init_starts,
    law_for_data,
    prepare,
    solve,
    summarize,
)
from .io import load_bootstrap, save_bootstrap
from .laws import AbstractLaw
from .laws._base import check_mixture_rows, mixture_frame
from .results import BootstrapRecord, FitFailedError, Solution, Status, status_counts
from .units import MODEL_SIZE_UNIT, TOKENS_UNIT, ScaleExtrapolationWarning, check_scale, extrapolation_message

__all__ = ["METHODS", "SCHEMES", "BootstrapResult", "bootstrap", "check_resamples", "data_fingerprint", "merge", "resample_weights"]

SCHEMES = ("rows", "mixtures", "stratified")
METHODS = ("percentile", "bca")


# --------------------------------------------------------------------------- resampling
def check_resamples(resamples, name: str = "resamples") -> int:
    """``resamples`` as an int, or a ValueError naming ``name`` (a keyword or a command-line flag) unless it is an
    integer >= 2: an interval from one resample has lo == hi."""
    try:
        value = int(resamples)
        ok = not isinstance(resamples, bool) and value == resamples and value >= 2
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer of at least 2 (an interval needs 2 or more resamples), got {resamples!r}")
    return value


def _scale_groups(data: MixtureData) -> np.ndarray:
    """Integer id of each row's (model_size, n_tokens) scale (unknown values form one group)."""
    keys = np.nan_to_num(np.stack([data.model_size, data.n_tokens], axis=1), nan=-1.0)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def _units(data: MixtureData, scheme: str) -> np.ndarray:
    """Jackknife unit of each row: the mixture for ``"mixtures"``, the row otherwise."""
    if scheme == "mixtures":
        return np.unique(data.mixture_id, return_inverse=True)[1].reshape(-1)
    return np.arange(data.n_rows)


def resample_weights(data: MixtureData, resamples: int, scheme: str = "rows", seed: int = 0, *, first: int = 0) -> np.ndarray:
    """Multiplicities ``(resamples, n)`` (int64) of the rows of ``data`` in bootstrap resamples
    ``first .. first+resamples-1``.

    Resample r is drawn with its own generator ``numpy.random.default_rng([seed, 1, r])``, so it is the same whatever
    the number of resamples, chunks, devices, processes or slices; see the module docstring for the schemes. Row
    weights sum to n for ``"rows"`` and ``"stratified"`` (to n_s within each scale); for ``"mixtures"`` the mixture
    multiplicities sum to the number of mixtures."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    if isinstance(first, bool) or int(first) != first or first < 0:
        raise ValueError(f"first must be a non-negative integer, got {first!r}")
    n, R, first = data.n_rows, int(resamples), int(first)
    rngs = (np.random.default_rng([int(seed), 1, r]) for r in range(first, first + R))
    if scheme == "rows":
        p = np.full(n, 1.0 / n)
        return np.stack([rng.multinomial(n, p) for rng in rngs]).astype(np.int64)
    if scheme == "mixtures":
        g = _units(data, "mixtures")
        G = int(g.max()) + 1
        if G < 2:
            raise DataError(f"scheme='mixtures' needs at least 2 distinct mixtures; {data.name!r} has {G}")
        p = np.full(G, 1.0 / G)
        counts = np.stack([rng.multinomial(G, p) for rng in rngs])
        return counts[:, g].astype(np.int64)
    s = _scale_groups(data)
    groups = [np.flatnonzero(s == k) for k in range(int(s.max()) + 1)]
    w = np.zeros((R, n), np.int64)
    for i, rng in enumerate(rngs):
        for rows in groups:
            w[i, rows] = rng.multinomial(rows.size, np.full(rows.size, 1.0 / rows.size))
    return w


# --------------------------------------------------------------------------- intervals (maths in mixjax.intervals)
def _interval_leaf(boot, estimate, jack, level, method):
    """lo, hi of one array: ``boot`` (R_ok, ...) bootstrap values, ``estimate`` (...), ``jack`` (U_ok, ...); warns
    when some resamples give non-finite values (they are left out element by element)."""
    boot = np.asarray(boot, np.float64)
    count = np.isfinite(boot).sum(axis=0)
    if (count < boot.shape[0]).any():
        warnings.warn(
            f"{int((boot.shape[0] - count).max())} usable resample(s) give a non-finite value for some element(s); "
            "those values are left out of that element's interval",
            stacklevel=4,
        )
    if (count == 0).any():
        warnings.warn("some element(s) are non-finite in every resample: their interval is NaN", stacklevel=4)
    return intervals.interval(boot, level, method, estimate=np.asarray(estimate, np.float64), jackknife_values=jack)


def _check_level_method(level, method):
    if not (isinstance(level, (int, float)) and 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# --------------------------------------------------------------------------- the result
def _stack_laws_apply(fn, laws):
    return eqx.filter_vmap(fn)(laws)


@dataclasses.dataclass(eq=False)
class BootstrapResult:
    """R bootstrap refits of a law, and the full-data fit.

    Attributes:
      resamples: the engine's solution (:class:`mixjax.Solution`, as :attr:`mixjax.Fit.starts`) of each
        resample's best start, batched ``(R,)``: ``y`` (the laws; also read as ``law``), ``value`` (``loss``),
        ``status``, ``num_steps``, ``rel_grad`` (``grad_norm``).
        ``laws``, ``status`` and ``loss`` read it (``status`` and ``loss`` as numpy arrays).
      weights: ``(R, n)`` row multiplicities of each resample (int64).
      point: the :class:`mixjax.Fit` on the full data (the point estimate of every interval).
      seed, scheme: how the resamples were drawn; level, method: defaults of the interval methods.
      units: ``(n,)`` jackknife unit of each row (row index, or mixture index for ``"mixtures"``).
      record: a :class:`mixjax.BootstrapRecord` of how the bootstrap was made: starts, settings, timings, status
        counts of every start and resample (``info`` is the same as a plain dict).
      jackknife_laws / jackknife_status: leave-one-unit-out fits (batched ``(U,)``), filled for BCa.
      training_arrays: the prepared training rows (:class:`mixjax.fitting.FitArrays`) the resamples were drawn over;
        None after :meth:`load` (then :meth:`jackknife` and the mixture tools take the training data again).
    """

    resamples: Solution
    weights: np.ndarray
    point: Fit
    seed: int
    scheme: str
    level: float = 0.9
    method: str = "percentile"
    units: np.ndarray | None = None
    record: BootstrapRecord = dataclasses.field(default_factory=BootstrapRecord)
    jackknife_laws: AbstractLaw | None = None
    jackknife_status: np.ndarray | None = None
    training_arrays: FitArrays | None = dataclasses.field(default=None, repr=False)

    @property
    def info(self) -> dict[str, Any]:
        """The :attr:`record` as a plain dict, with its ``summary`` (a copy: change the record with ``record.replace``)."""
        out = self.record.as_dict()
        if self.record.summary is not None:
            out["summary"] = self.record.summary
        return out

    @property
    def laws(self) -> AbstractLaw:
        """One batched law: every parameter array has leading axis R (each resample's best start)."""
        return self.resamples.law

    @property
    def status(self) -> np.ndarray:
        """``(R,)`` :class:`mixjax.Status` codes of the resamples' best starts."""
        return np.asarray(self.resamples.status)

    @property
    def loss(self) -> np.ndarray:
        """``(R,)`` objectives of the resamples' best starts."""
        return np.asarray(self.resamples.loss)

    # ----------------------------------------------------------------- counts
    @property
    def n_resamples(self) -> int:
        return int(self.status.shape[0])

    @property
    def ok(self) -> np.ndarray:
        """``(R,)`` bool: resamples whose fit did not fail (every interval uses exactly these)."""
        return np.asarray(self.status) != int(Status.nonfinite)

    @property
    def n_failed(self) -> int:
        """Resamples whose every start failed (non-finite); excluded from every interval."""
        return int((~self.ok).sum())

    def __repr__(self) -> str:
        return (
            f"BootstrapResult(law={self.point.record.law}, resamples={self.n_resamples}, failed={self.n_failed}, "
            f"scheme={self.scheme!r}, seed={self.seed}, status={status_counts(self.status)})"
        )

    # ----------------------------------------------------------------- derived quantities
    def apply(self, fn: Callable[[AbstractLaw], Any]) -> Any:
        """``fn`` applied to every resample's law: ``vmap(fn)(laws)``, a pytree of arrays with leading axis R
        (failed resamples included; select with :attr:`ok`)."""
        return _stack_laws_apply(fn, self.laws)

    def jackknife(self, data: MixtureData | None = None, *, chunk_size: int | None = None) -> AbstractLaw:
        """Leave-one-unit-out refits (U of them, one start each from the full-data fit, one batched call); used by
        BCa. Cached on the result (and saved with it). After :meth:`load`, pass the training ``data``.
        ``chunk_size`` defaults to the bootstrap's (then no new compilation is needed for the jackknife)."""
        if self.jackknife_laws is not None:
            return self.jackknife_laws
        arrays = self.training_arrays
        if arrays is None:
            if data is None:
                raise ValueError("BCa needs the jackknife refits; this result was loaded without them: pass the training data to jackknife(data)")
            arrays, _ = prepare(self.point.law, data, mask_zero_weight=self.point.record.mask_zero_weight, dtype=self.point.config.dtype)
            if arrays.h.shape[0] != self.weights.shape[1]:
                raise DataError(f"data has {arrays.h.shape[0]} rows; this bootstrap was drawn over {self.weights.shape[1]}")
        units = np.asarray(self.units)
        U = int(units.max()) + 1
        W = (units[None, :] != np.arange(U)[:, None]).astype(np.float64)
        starts = jax.tree_util.tree_map(lambda x: jnp.repeat(x[None], U, axis=0) if eqx.is_array(x) else x, self.point.law)
        if chunk_size is None:
            chunk_size = self.record.chunk_size
        t0 = time.perf_counter()
        res = _solve_chunked(starts, W, arrays, self.point.config, chunk_size, None)
        self.record = self.record.replace(jackknife_seconds=time.perf_counter() - t0)
        self.jackknife_laws = res.law
        self.jackknife_status = np.asarray(res.status)
        return res.law

    def interval(self, fn: Callable[[AbstractLaw], Any], level: float | None = None, method: str | None = None) -> dict:
        """Interval of any derived quantity ``fn(law)`` (an array or a pytree of arrays), elementwise:
        ``{"estimate": fn(point law), "lo": ..., "hi": ...}`` (each like ``fn``'s output), over usable resamples
        only. ``level`` and ``method`` default to the result's."""
        level = self.level if level is None else level
        method = self.method if method is None else method
        _check_level_method(level, method)
        ok = self.ok
        if not ok.any():
            raise RuntimeError(f"all {self.n_resamples} resamples failed (non-finite fits): no interval can be formed")
        est = fn(self.point.law)
        boot = self.apply(fn)
        jack_tree = None
        if method == "bca":
            jl = self.jackknife()
            jvals = _stack_laws_apply(fn, jl)
            jok = np.asarray(self.jackknife_status) != int(Status.nonfinite)
            jack_tree = jax.tree_util.tree_map(lambda v: np.asarray(v)[jok], jvals)
        leaves_est, treedef = jax.tree_util.tree_flatten(est)
        leaves_boot = treedef.flatten_up_to(boot)
        leaves_jack = treedef.flatten_up_to(jack_tree) if jack_tree is not None else [None] * len(leaves_est)
        lo, hi = [], []
        for e, b, j in zip(leaves_est, leaves_boot, leaves_jack):
            a, c = _interval_leaf(np.asarray(b)[ok], e, j, float(level), method)
            lo.append(a)
            hi.append(c)
        np_est = [np.asarray(e, np.float64) for e in leaves_est]
        return {
            "estimate": jax.tree_util.tree_unflatten(treedef, np_est),
            "lo": jax.tree_util.tree_unflatten(treedef, lo),
            "hi": jax.tree_util.tree_unflatten(treedef, hi),
        }

    def param_intervals(self, level: float | None = None, method: str | None = None) -> dict[str, dict[str, np.ndarray]]:
        """``{name: {"estimate", "lo", "hi"}}`` for every readable parameter (``law.params()``)."""
        iv = self.interval(lambda law: law.params(), level, method)
        return {k: {"estimate": iv["estimate"][k], "lo": iv["lo"][k], "hi": iv["hi"][k]} for k in iv["estimate"]}

    def predict_intervals(self, mixtures, model_size=None, n_tokens=None, level: float | None = None, method: str | None = None, *, units: str = "raw") -> dict[str, np.ndarray]:
        """Intervals of predicted losses ``(n, V)`` at mixtures ``(n, K)`` (or one ``(K,)``), model sizes and token
        counts (scalars or ``(n,)``). ``units="raw"``: parameters and tokens (``122e6``, ``9.998e9``), as in
        :class:`MixtureData`; ``units="law"``: millions of parameters and billions of tokens. ``mixtures`` may
        also be a :class:`MixtureData`, whose own scales are used."""
        if isinstance(mixtures, MixtureData):
            d = mixtures.align(self.point.record.domains, to=f"the fit of {self.point.record.law}")
            h, N, D = d.mixtures, d.model_size_m, d.n_tokens_b
            for kind, v in (("model_size", d.model_size), ("n_tokens", d.n_tokens)):
                self._warn_far(kind, v)
        else:
            if hasattr(mixtures, "columns") and hasattr(mixtures, "iloc"):  # a DataFrame: columns matched by name
                mixtures = mixture_frame(mixtures, self.point.record.domains)
            elif isinstance(mixtures, dict):
                raise TypeError("mixtures must be an (n, K) array, a DataFrame with one column per domain, or a MixtureData; got a dict")
            h = np.array(mixtures, np.float64, copy=True)
            if h.ndim == 1:
                h = h[None]
            K = len(self.point.record.domains)
            if h.ndim != 2 or h.shape[1] != K:
                raise ValueError(f"mixtures has shape {np.shape(mixtures)}, expected (n, {K}) or ({K},)")
            if units not in ("raw", "law"):
                raise ValueError(f"units must be 'raw' or 'law', got {units!r}")
            scale = (MODEL_SIZE_UNIT, TOKENS_UNIT) if units == "raw" else (1.0, 1.0)
            n = h.shape[0]

            def as_scale(v, label, unit):
                if v is None:
                    if self.point.law.uses_model_size and label == "model_size" or self.point.law.uses_tokens and label == "n_tokens":
                        raise ValueError(f"{self.point.record.law} needs {label}")
                    return np.ones(n)
                v = np.broadcast_to(np.asarray(v, np.float64), (n,)) / unit
                if not np.all(np.isfinite(v) & (v > 0)):
                    raise ValueError(f"{label} must be positive and finite, got {v}")
                check_scale(v, label, units="law", where=label)
                self._warn_far(label, v * (MODEL_SIZE_UNIT if label == "model_size" else TOKENS_UNIT))
                return v

            check_mixture_rows(h, "mixtures", K)
            N, D = as_scale(model_size, "model_size", scale[0]), as_scale(n_tokens, "n_tokens", scale[1])
        dt = jnp.dtype(self.point.config.dtype)
        hj, Nj, Dj = jnp.asarray(h, dt), jnp.asarray(N, dt), jnp.asarray(D, dt)
        return self.interval(lambda law: jax.vmap(law)(hj, Nj, Dj), level, method)

    def _warn_far(self, kind: str, raw_values) -> None:
        """Warn (:class:`mixjax.units.ScaleExtrapolationWarning`) when a raw scale lies far outside the fitted ones."""
        v = np.asarray(raw_values, dtype=np.float64).reshape(-1)
        v = v[np.isfinite(v)]
        for x in (v.min(), v.max()) if v.size else ():
            msg = extrapolation_message(self.point.scale_extrapolation(**{kind: float(x)})[kind], kind)
            if msg:
                warnings.warn(msg, ScaleExtrapolationWarning, stacklevel=4)

    # ----------------------------------------------------------------- save / load
    def save(self, path) -> None:
        """Write the result as a mixjax fit file (:func:`mixjax.io.save_bootstrap`): the full-data fit, the
        resample laws as its ensemble, the weights, statuses and jackknife; :meth:`load` restores it bit for bit,
        and :func:`mixjax.load_fit` / ``mixjax predict`` read it as a fit with an ensemble."""
        save_bootstrap(path, self)

    @classmethod
    def load(cls, path, law: type[AbstractLaw] | None = None) -> BootstrapResult:
        """Read a file written by :meth:`save`. ``law``: the law class, needed only for a law that is not
        registered (:func:`mixjax.register`)."""
        return cls(**load_bootstrap(path, law))


# --------------------------------------------------------------------------- entry point
def _solve_chunked(batch: AbstractLaw, member_w: np.ndarray, arrays: FitArrays, config: FitConfig, chunk_size: int | None, progress) -> Solution:
    """:func:`mixjax.fitting.solve` on B members (row weights ``(B, n)``); with ``chunk_size`` every chunk has that
    many members (the last one padded), so every call of one law and dataset reuses one compiled program."""
    res = solve(batch, jnp.asarray(member_w, jnp.dtype(config.dtype)), arrays, config, chunk_size=chunk_size, progress=progress)
    jax.block_until_ready(res.loss)
    return res


def bootstrap(
    law,
    data: MixtureData,
    *,
    resamples: int = 1000,
    scheme: str = "rows",
    starts: int = 2,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    level: float = 0.9,
    method: str = "percentile",
    warm_start: bool = True,
    point_starts: int = 16,
    part: tuple[int, int] | None = None,
    throw: bool = True,
    point: Fit | None = None,
    **fit_kwargs,
) -> BootstrapResult:
    """Bootstrap a law's fit: R resamples x S starts refitted in one batched, compiled call.

    Args:
      law: a law name, class or instance (as for :func:`mixjax.fit`: a law that must know the table's layout is
        bound to it through :meth:`AbstractLaw.for_data`).
      data: the training runs (:class:`MixtureData`).
      resamples: R, the number of bootstrap resamples (at least 2).
      scheme: ``"rows"``, ``"mixtures"`` or ``"stratified"`` (module docstring).
      starts: S starts per resample; the best finite one is kept. With ``warm_start`` start 0 is the full-data fit,
        so the default 2 is that fit plus one random draw.
      point_starts: starts of the full-data fit (default 16, as :func:`mixjax.fit`).
      seed: every work item draws from the seed and its own index: start i of the full-data fit from
        ``fold_in(PRNGKey(seed), i)`` (as :func:`mixjax.fit`), start s of resample r from
        ``fold_in(fold_in(PRNGKey(seed), 1), r * starts + s)``, the row weights of resample r from
        ``numpy.random.default_rng([seed, 1, r])``. So the result does not depend on ``chunk_size``, on the
        devices or processes the batch runs on, or on ``part``.
      chunk_size: fit the R*S members in chunks of this size (one compiled shape, last chunk padded) to bound
        memory; progress is reported after each chunk; the BCa jackknife reuses the same compiled shape.
      progress: optional callable ``progress(done, total)``, called after each chunk of resample fits (outside the
        compiled call; :class:`mixjax.ProgressBar` draws it, as the command line does on a terminal). Library code never prints.
      level, method: defaults for :meth:`BootstrapResult.interval` (``"percentile"`` or ``"bca"``).
      warm_start: start 0 of every resample is the full-data fit (the other S-1 are random draws).
      part: ``(i, n)``: fit only slice i of n of the resamples (a contiguous range,
        :func:`mixjax.distributed.slice_range`) for a cluster scheduler; the result holds those resamples and
        records the slice in ``record.slice``; :func:`merge` joins the n parts into the one-run result.
      point: the full-data fit, when it was made before (by :func:`mixjax.fit` on this same table, with this law
        and these settings, or loaded from its file): it is used instead of refitting, so that the slices of a job
        array do not each refit it. A fit of another table (by its recorded fingerprint), law, settings or mask rule
        is refused with a ValueError, and so is a fit file that records no fingerprint of its data.
      throw: raise :class:`mixjax.FitFailedError` when the full-data fit or every resample failed (non-finite);
        otherwise the result carries those statuses. Resamples at the step limit are counted in
        ``record.resample_status``, never raised.
      **fit_kwargs: objective, optimizer, max_steps, mask_zero_weight, dtype, other :class:`FitConfig` fields.

    The R*S members are sharded over this process's devices; under ``jax.distributed`` every process makes the
    same call, fits its share and returns the same result (:mod:`mixjax.distributed`).

    Cost: (R*S + S) fits (a part: its resamples' fits, and the S full-data starts); BCa adds U fits (rows, or
    mixtures for that scheme) on first use.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    check_resamples(resamples)
    if isinstance(starts, bool) or int(starts) != starts or starts < 1:
        raise ValueError(f"starts must be a positive integer, got {starts!r}")
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    seed = check_seed(seed)
    _check_level_method(level, method)
    if "weights" in fit_kwargs:
        raise TypeError("bootstrap draws its own row weights; 'weights' cannot be passed")
    if not isinstance(data, MixtureData):
        raise TypeError(f"data must be a MixtureData (see mixjax.load_csv / from_arrays), got {type(data).__name__}")
    R, S = int(resamples), int(starts)
    lo, hi = (0, R) if part is None else _part_range(part, R)
    dtype = fit_kwargs.get("dtype") or default_dtype()
    cls, law = law_for_data(law, data, dtype)  # a law that must know the table's layout is bound to it
    probe, _ = prepare(cls, data, mask_zero_weight=fit_kwargs.get("mask_zero_weight"), dtype=dtype)
    k = check_first_start(law, summarize(probe, data), dtype, probe, data)
    settings = FitConfig(dtype=dtype, **{f.name: fit_kwargs[f.name] for f in dataclasses.fields(FitConfig) if f.name in fit_kwargs and f.name != "dtype"})
    n = data.n_rows
    Rp = hi - lo  # the resamples fitted here
    check_batch_memory(Rp * S, k, probe, settings, what=f"fits of {cls.name} ({Rp} resamples x {S} starts)", fewer="fewer resamples or starts",
                  chunk_size=chunk_size, extra_bytes=8 * n * (Rp + Rp * S))  # the int64 multiplicities, and per member

    t0 = time.perf_counter()
    point_given = point is not None
    if point is not None:
        _check_point(point, cls, data, settings.resolved(k), probe, fit_kwargs.get("mask_zero_weight"))
        if throw and point.status == Status.nonfinite:
            raise FitFailedError(f"the given full-data fit of {cls.name} failed (status nonfinite)")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MaxStepsWarning)  # said once below, for what it means to the resamples
            point = fit(law, data, starts=int(point_starts), seed=seed, throw=throw, **fit_kwargs)
    t_point = time.perf_counter() - t0
    config = point.config
    # the table as the full-data fit saw it: the probe's arrays (same mask rule), unless a polish changed the dtype
    arrays = probe if config.dtype == dtype else prepare(cls, data, mask_zero_weight=point.record.mask_zero_weight, dtype=config.dtype)[0]
    summary = summarize(arrays, data)

    W = resample_weights(data, Rp, scheme, int(seed), first=lo)
    key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), 1)
    batch = init_starts(law, key, Rp * S, summary, config.dtype, first=lo * S)
    if warm_start:
        first = np.arange(Rp) * S
        batch = eqx.combine(
            jax.tree_util.tree_map(lambda s, p: s.at[first].set(p.astype(s.dtype)), eqx.filter(batch, eqx.is_array), eqx.filter(point.law, eqx.is_array)),
            eqx.filter(batch, eqx.is_array, inverse=True),
        )
    member_w = np.repeat(W, S, axis=0)  # (R*S, n), resample r owns members r*S .. r*S+S-1

    t1 = time.perf_counter()
    res = _solve_chunked(batch, member_w, arrays, config, chunk_size, progress)
    t_solve = time.perf_counter() - t1

    grouped = jax.tree_util.tree_map(lambda x: x.reshape((Rp, S) + x.shape[1:]) if eqx.is_array(x) else x, res)
    best, idx = best_of(grouped, axis=-1)
    status = np.asarray(best.status)
    if throw and status.size and np.all(status == int(Status.nonfinite)):
        raise FitFailedError(f"every one of the {Rp} resamples of {cls.name} failed (non-finite objective at every start); "
                             "check the data (a resample may leave a target without cells) and the law")
    result = BootstrapResult(
        resamples=best,
        weights=W,
        point=point,
        seed=int(seed),
        scheme=scheme,
        level=float(level),
        method=method,
        units=_units(data, scheme),
        record=BootstrapRecord(
            law=cls.name,
            data=data.name,
            n_rows=data.n_rows,
            data_sha256=data_fingerprint(data),
            resamples=R,
            starts=S,
            warm_start=bool(warm_start),
            point_fit="given" if point_given else f"fitted, {int(point_starts)} starts",
            chunk_size=chunk_size,
            start_status=status_counts(res.status),
            resample_status=status_counts(status),
            best_start=np.asarray(idx).tolist(),
            seconds_point_fit=t_point,
            seconds_resamples=t_solve,
            backend=jax.default_backend(),
            summary=summary,
            slice=None if part is None else {"index": int(part[0]), "count": int(part[1]), "first": lo, "stop": hi},
        ),
        training_arrays=arrays,
    )
    if point.status == Status.max_steps:
        warnings.warn(
            f"the full-data fit of {cls.name} stopped at the step limit (max_steps={config.max_steps}) before converging; "
            "resamples warm-started from it run further, so intervals may not contain the estimate: raise max_steps",
            MaxStepsWarning,
            stacklevel=2,
        )
    return result


def _check_point(point, cls, data: MixtureData, settings: FitConfig, arrays, mask_zero_weight) -> None:
    """A ValueError unless ``point`` is a fit of law ``cls`` to this very table under ``settings`` and the same mask
    rule (what the bootstrap's own full-data fit would have been made with, up to its starts and seed)."""
    if not isinstance(point, Fit):
        raise TypeError(f"point must be a mixjax.Fit (mixjax.fit or mixjax.load_fit), got {type(point).__name__}")
    rec = point.record
    if rec.law != cls.name:
        raise ValueError(f"point is a fit of {rec.law}, but the bootstrap fits {cls.name}")
    if rec.data_sha256 is None:
        raise ValueError("point records no fingerprint of its data (a fit file written by an earlier mixjax): it cannot "
                         "be checked against this table; let the bootstrap refit it")
    if rec.data_sha256 != data_fingerprint(data):
        raise ValueError(f"point was fitted to another table ({rec.data!r}, {rec.n_rows} rows) than {data.name!r} "
                         f"({data.n_rows} rows): its fingerprint differs")
    mask = bool(cls.mask_zero_weight if mask_zero_weight is None else mask_zero_weight)
    if rec.mask_zero_weight is not None and bool(rec.mask_zero_weight) != mask:
        raise ValueError(f"point was fitted with mask_zero_weight={rec.mask_zero_weight}, the bootstrap uses {mask}")
    mine = dataclasses.replace(settings, lanes=None)
    theirs = dataclasses.replace(point.config, lanes=None)
    if mine != theirs:
        differ = [f"{f.name} {getattr(theirs, f.name)!r} vs {getattr(mine, f.name)!r}" for f in dataclasses.fields(FitConfig)
                  if getattr(theirs, f.name) != getattr(mine, f.name)]
        raise ValueError(f"point was fitted with other settings than the bootstrap's: {', '.join(differ)} (point vs bootstrap)")


# --------------------------------------------------------------------------- slices
def _part_range(part, R: int) -> tuple[int, int]:
    """Resamples ``lo .. hi-1`` of ``part = (i, n)``, checked."""
    try:
        i, n = part
    except (TypeError, ValueError):
        raise ValueError(f"part must be a pair (i, n): slice i of n, counted from 0; got {part!r}") from None
    check_slice(i, n, R)
    return slice_range(R, int(i), int(n))


#: Fields of the :class:`BootstrapRecord` that every part of one bootstrap shares.
_SHARED_INFO = ("law", "data", "data_sha256", "n_rows", "resamples", "starts", "warm_start")

#: Relative difference allowed between the parts' full-data objectives (they are the same fit; on other hardware
#: rounding may differ slightly).
POINT_RTOL = 1e-6


def merge(parts: Sequence[BootstrapResult], names: Sequence[str] | None = None) -> BootstrapResult:
    """Join the slices of one bootstrap (``bootstrap(..., part=(i, n))`` for i = 0 .. n-1, in any order) into the
    result one run would give: resamples in order, the full-data fit of slice 0, status counts summed.

    Every slice must be present exactly once, and all must share the law, data (by fingerprint), seed, scheme,
    resample and start counts and settings; otherwise a ValueError names the part (``names``: how to call them in
    messages, e.g. file names). A jackknife (BCa) is kept from slice 0 when it holds one; else it is computed on
    first use (after loading from a file, pass the data to :meth:`BootstrapResult.jackknife`)."""
    parts = list(parts)
    names = distributed.part_names(parts, names, BootstrapResult)
    for p, name in zip(parts, names):
        if not isinstance(p.record.slice, Mapping):
            raise ValueError(f"{name} holds a whole bootstrap, not a slice (run mixjax bootstrap with --slice i/n)")
    ref, ref_name = parts[0], names[0]

    def key(p):
        return ({k: getattr(p.record, k) for k in _SHARED_INFO}, p.seed, p.scheme, p.point.config, p.point.record.domains,
                p.point.record.targets, int(p.weights.shape[1]))

    labels = ("law", "data", "data fingerprint", "rows", "resamples", "starts per resample", "warm start")
    for p, name in zip(parts[1:], names[1:]):
        a, b = key(ref), key(p)
        if a != b:
            what = [f"{lab} {x!r} vs {y!r}" for lab, x, y in zip(labels, a[0].values(), b[0].values()) if x != y]
            what += [f"{lab} {x!r} vs {y!r}" for lab, x, y in zip(("seed", "scheme", "settings", "domains", "targets", "rows"), a[1:], b[1:]) if x != y]
            raise ValueError(f"{name} is not a slice of the same bootstrap as {ref_name}: {'; '.join(what)}")
    n = distributed.check_slice_set([(p.record.slice["index"], p.record.slice["count"]) for p in parts], names, "the resamples")
    R = int(ref.record.resamples)
    order = sorted(range(len(parts)), key=lambda j: parts[j].record.slice["index"])
    parts, names = [parts[j] for j in order], [names[j] for j in order]
    for i, (p, name) in enumerate(zip(parts, names)):
        lo, hi = slice_range(R, i, n)
        sl = p.record.slice
        if (sl.get("first"), sl.get("stop"), p.n_resamples) != (lo, hi, hi - lo):
            raise ValueError(f"{name}: slice {i}/{n} of {R} resamples should hold resamples {lo}..{hi - 1}, "
                             f"it holds {p.n_resamples} from {sl.get('first')}")
        scale = max(abs(parts[0].point.loss), np.finfo(np.float64).tiny)
        if not abs(p.point.loss - parts[0].point.loss) <= POINT_RTOL * scale:
            raise ValueError(f"{name}: its full-data fit (objective {p.point.loss:.10g}) differs from that of "
                             f"{names[0]} ({parts[0].point.loss:.10g}): the parts were not fitted to the same data and settings")
    first = parts[0]
    resamples = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate([np.asarray(x) for x in xs])) if eqx.is_array(xs[0]) else xs[0],
                                       *[p.resamples for p in parts])
    status = np.asarray(resamples.status)
    start_status = {k: int(sum(p.record.start_status.get(k, 0) for p in parts)) for k in first.record.start_status}
    record = first.record.replace(slice=None, start_status=start_status, resample_status=status_counts(status),
                                  best_start=[b for p in parts for b in list(p.record.best_start)])
    if record.seconds_resamples is not None:
        record = record.replace(seconds_resamples=float(sum(p.record.seconds_resamples or 0.0 for p in parts)))
    return BootstrapResult(
        resamples=resamples, weights=np.concatenate([np.asarray(p.weights) for p in parts]), point=first.point, seed=first.seed,
        scheme=first.scheme, level=first.level, method=first.method, units=first.units, record=record,
        jackknife_laws=first.jackknife_laws, jackknife_status=first.jackknife_status, training_arrays=first.training_arrays,
    )
