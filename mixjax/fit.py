"""Batched fitting: objectives, compiled optimizer loops, multi-start, and the ``fit`` entry point.

The engine (:func:`solve`) fits a batch of B laws at once: one ``jax.jit`` compile per problem shape, the
optimizer loop inside ``jax.lax.while_loop``, ``jax.vmap`` over the batch (random starts, bootstrap resamples
expressed as per-row weights). Every member gets its own status (:class:`mixjax.Status`); a member that turns
non-finite stops, keeps its last finite point and is reported, never mixed into the others.

Objective over measured cells (mask m, row weights w)::

    J(theta) = sum_{r,j} w_r m_rj rho(pred_rj(theta), y_rj) / sum_{r,j} w_r m_rj

with ``rho`` one of ``"mse"`` (pred - y)^2, ``"relative"`` ((pred - y) / y)^2, ``"huber_log"`` Huber_delta(log pred
- log y) (the Chinchilla recipe, delta = 1e-3).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .data import DataError, MixtureData
from .laws import AbstractLaw, DataSummary, get_law, n_params
from .metrics import metric_table
from .results import Status, status_counts

__all__ = ["FitConfig", "FitArrays", "FitResult", "Fit", "fit", "solve", "prepare", "objective_value", "init_starts", "best_of"]

OBJECTIVES = ("mse", "relative", "huber_log")
OPTIMIZERS = ("lbfgs", "adam")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of a fit; hashable, so it is static under ``jax.jit`` (a new value compiles a new program).

    objective: "mse", "relative" or "huber_log" (see module docstring); huber_delta for the latter.
    optimizer: "lbfgs" (optax L-BFGS; ``linesearch`` "backtracking" (Armijo, the default: cheaper to compile
    and to run, same fit quality on the bundled data) or "zoom" (strong Wolfe)) or "adam" (learning_rate, cosine
    decay).
    max_steps: optimizer iterations per member. ftol: a member converges when its relative objective decrease
    stays below ftol for ``patience`` iterations in a row, or its gradient norm falls below gtol.
    dtype: "float64" or "float32" (float32 is the fast path on accelerators).
    """

    objective: str = "mse"
    optimizer: str = "lbfgs"
    max_steps: int = 400
    ftol: float = 1e-10
    gtol: float = 1e-12
    patience: int = 5
    learning_rate: float = 0.02
    lbfgs_memory: int = 10
    linesearch: str = "backtracking"
    huber_delta: float = 1e-3
    dtype: str = "float64"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.linesearch not in ("backtracking", "zoom"):
            raise ValueError(f"linesearch must be 'backtracking' or 'zoom', got {self.linesearch!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError("dtype='float64' needs jax_enable_x64; mixjax enables it on import unless MIXJAX_X64=0")


class FitArrays(NamedTuple):
    """Device arrays a law is fitted to: mixtures (n, K), model size (n,) in M params, tokens (n,) in B tokens,
    losses (n, V) with missing cells filled by 1, and the (n, V) mask of cells that count."""

    h: jax.Array
    N: jax.Array
    D: jax.Array
    y: jax.Array
    mask: jax.Array


# --------------------------------------------------------------------------- preparing data for a law
def _law_class(law) -> type[AbstractLaw]:
    if isinstance(law, str):
        return get_law(law)
    if isinstance(law, type) and issubclass(law, AbstractLaw):
        return law
    if isinstance(law, AbstractLaw):
        return type(law)
    raise TypeError(f"law must be a law name, an AbstractLaw subclass or instance, got {law!r}")


def prepare(law, data: MixtureData, *, mask_zero_weight: bool | None = None, dtype: str = "float64") -> tuple[FitArrays, np.ndarray]:
    """The arrays a law is fitted to, and the (n, V) observed losses (NaN where not counted).

    Per-domain laws use the loss columns that match the training domains (in domain order); other laws use every
    loss column. Cells whose own domain weight is 0 are excluded when ``mask_zero_weight`` (default: the law's
    preference). Rows with unknown model size or tokens are refused for laws that use them."""
    cls = _law_class(law)
    if not isinstance(data, MixtureData):
        raise TypeError(f"data must be a MixtureData (see mixjax.load_csv / from_arrays), got {type(data).__name__}")
    if cls.per_domain:
        y, mask = data.domain_losses()
        if not mask.any():
            raise DataError(
                f"{cls.name} predicts one loss per training domain, but no loss column of {data.name!r} matches a "
                f"domain (domains {list(data.domains)}, loss columns {list(data.targets)})"
            )
    else:
        y, mask = np.array(data.losses), data.mask
    if mask_zero_weight is None:
        mask_zero_weight = cls.mask_zero_weight
    if mask_zero_weight and cls.per_domain:
        mask = mask & (data.mixtures > 0)
    for flag, values, label in ((cls.uses_model_size, data.model_size, "model_size"), (cls.uses_tokens, data.n_tokens, "n_tokens")):
        bad = np.flatnonzero(~np.isfinite(values))
        if flag and bad.size:
            raise DataError(f"law {cls.name} needs {label}, which is missing in {bad.size} row(s) of {data.name!r} (first: row {bad[0]})")
    dt = jnp.dtype(dtype)
    fill = lambda v: np.where(np.isfinite(v), v, 1.0)  # noqa: E731 (unused cells; never counted)
    arrays = FitArrays(
        h=jnp.asarray(data.mixtures, dt),
        N=jnp.asarray(fill(data.model_size_m), dt),
        D=jnp.asarray(fill(data.n_tokens_b), dt),
        y=jnp.asarray(np.where(mask, y, 1.0), dt),
        mask=jnp.asarray(mask),
    )
    return arrays, np.where(mask, y, np.nan)


def summarize(arrays: FitArrays, data: MixtureData | None = None) -> DataSummary:
    """The :class:`DataSummary` of prepared arrays (used to draw starting points)."""
    h = np.asarray(arrays.h)
    mask = np.asarray(arrays.mask)
    N = np.asarray(arrays.N) if data is None else data.model_size_m
    D = np.asarray(arrays.D) if data is None else data.n_tokens_b
    return DataSummary.from_arrays(h, np.asarray(arrays.y), mask, N, D)


# --------------------------------------------------------------------------- objective
def objective_value(law: AbstractLaw, arrays: FitArrays, weights: jax.Array, config: FitConfig) -> jax.Array:
    """The weighted, masked objective J(theta) of the module docstring (a scalar)."""
    pred = jax.vmap(law)(arrays.h, arrays.N, arrays.D)
    y = arrays.y
    if config.objective == "mse":
        rho = (pred - y) ** 2
    elif config.objective == "relative":
        rho = ((pred - y) / y) ** 2
    else:
        tiny = jnp.finfo(pred.dtype).tiny
        r = jnp.log(jnp.maximum(pred, tiny)) - jnp.log(y)
        rho = optax.losses.huber_loss(r, delta=config.huber_delta)
    w = weights[:, None] * arrays.mask
    rho = jnp.where(w > 0, rho, 0.0)  # a cell that does not count never contributes, even if its prediction is NaN
    return jnp.sum(w * rho) / jnp.maximum(jnp.sum(w), jnp.finfo(w.dtype).tiny)


# --------------------------------------------------------------------------- engine
class FitResult(eqx.Module):
    """Result of :func:`solve`, batched like the call: fitted laws, final objective, status code
    (:class:`Status`), iterations used and final gradient norm per member."""

    law: AbstractLaw
    loss: jax.Array
    status: jax.Array
    num_steps: jax.Array
    grad_norm: jax.Array


def _make_optimizer(config: FitConfig):
    if config.optimizer == "lbfgs":
        if config.linesearch == "zoom":
            return optax.lbfgs(memory_size=config.lbfgs_memory)
        ls = optax.scale_by_backtracking_linesearch(max_backtracking_steps=30, decrease_factor=0.5, store_grad=config.dtype == "float64")
        return optax.lbfgs(memory_size=config.lbfgs_memory, linesearch=ls)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.max_steps, alpha=0.01)
    return optax.adam(schedule)


def _solve_one(law0: AbstractLaw, weights: jax.Array, arrays: FitArrays, config: FitConfig) -> FitResult:
    params0, static = eqx.partition(law0, eqx.is_inexact_array)

    def f(p):
        return objective_value(eqx.combine(p, static), arrays, weights, config)

    opt = _make_optimizer(config)
    lbfgs = config.optimizer == "lbfgs"
    # the backtracking line search stores the accepted point's gradient only in float64 (see _make_optimizer)
    from_state = lbfgs and not (config.linesearch == "backtracking" and config.dtype == "float32")
    value_and_grad = optax.value_and_grad_from_state(f) if from_state else jax.value_and_grad(f)
    dtype = jnp.dtype(config.dtype)
    inf = jnp.array(jnp.inf, dtype)

    def all_finite(tree):
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))

    def cond(c):
        return (c["step"] < config.max_steps) & (c["status"] < 0)

    def body(c):
        p, s = c["params"], c["state"]
        value, grad = value_and_grad(p, state=s) if from_state else value_and_grad(p)
        if lbfgs:
            updates, s_new = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
        else:
            updates, s_new = opt.update(grad, s, p)
        p_new = optax.apply_updates(p, updates)
        gnorm = optax.tree.norm(grad)
        finite = jnp.isfinite(value) & all_finite(p_new) & jnp.isfinite(gnorm)
        small = jnp.abs(c["value"] - value) <= config.ftol * jnp.maximum(jnp.abs(value), jnp.finfo(dtype).tiny)
        calm = jnp.where(small & lbfgs, c["calm"] + 1, 0)
        converged = (gnorm <= config.gtol) | (calm >= config.patience)
        status = jnp.where(~finite, int(Status.nonfinite), jnp.where(converged, int(Status.converged), -1))
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        return {
            "params": keep(p_new, p),
            "state": keep(s_new, s),
            "step": c["step"] + 1,
            "value": jnp.where(finite, value, c["value"]),
            "calm": calm,
            "gnorm": gnorm,
            "status": status,
        }

    carry = {
        "params": params0,
        "state": opt.init(params0),
        "step": jnp.array(0),
        "value": inf,
        "calm": jnp.array(0),
        "gnorm": inf,
        "status": jnp.array(-1),
    }
    out = jax.lax.while_loop(cond, body, carry)
    final = f(out["params"])
    status = jnp.where(out["status"] < 0, int(Status.max_steps), out["status"])
    status = jnp.where(jnp.isfinite(final), status, int(Status.nonfinite))
    return FitResult(eqx.combine(out["params"], static), final, status, out["step"], out["gnorm"])


@eqx.filter_jit
def _solve_jit(laws, weights, arrays, config):
    return eqx.filter_vmap(_solve_one, in_axes=(0, 0, None, None))(laws, weights, arrays, config)


def _batch_sharding(n_devices: int):
    """Shardings that split a leading batch axis over the first ``n_devices`` devices, and replicate the rest."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())


def solve(
    laws: AbstractLaw,
    weights: jax.Array,
    arrays: FitArrays,
    config: FitConfig,
    *,
    chunk_size: int | None = None,
    shard: bool | None = None,
) -> FitResult:
    """Fit a batch of laws (leading axis B of every parameter array) with per-member row weights ``(B, n)``.

    One compiled program per (law type, shapes, config): new data values of the same shapes reuse it.

    chunk_size: cut the batch into chunks of at most this many members (the last one padded), run one after another
      through the same compiled program: batches larger than device memory run without recompiling. If a chunk
      (or the whole batch, by default) runs out of device memory, the chunk size is halved and the call retried,
      so too-large batches split automatically (each new chunk size compiles once).
    shard: split the batch axis over all devices of the default backend with ``jax.sharding`` (default: when
      there is more than one device). Each member is computed on one device; results equal the one-device run.
      Multi-host: call ``jax.distributed.initialize()`` first; ``jax.devices()`` then spans every host.
    """
    B = weights.shape[0]
    n_dev = jax.device_count() if (shard or (shard is None and jax.device_count() > 1)) else 1
    chunk = B if chunk_size is None else max(1, min(chunk_size, B))
    while True:
        try:
            return _solve_chunked(laws, weights, arrays, config, chunk, n_dev)
        except Exception as e:  # XlaRuntimeError has no stable import path across jax versions
            if "RESOURCE_EXHAUSTED" not in str(e) or chunk <= n_dev:
                raise
            warnings.warn(f"batch of {chunk} fits ran out of device memory; retrying in chunks of {max(chunk // 2, n_dev)}", stacklevel=2)
            chunk = max(chunk // 2, n_dev)


def _solve_chunked(laws, weights, arrays, config, chunk, n_dev):
    B = weights.shape[0]
    chunk = math.ceil(chunk / n_dev) * n_dev
    n_chunks = math.ceil(B / chunk)
    pad = n_chunks * chunk - B

    def padded(x):
        return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x

    laws_p = jax.tree_util.tree_map(lambda x: padded(x) if eqx.is_array(x) else x, laws)
    weights_p = padded(weights)
    if n_dev > 1:
        batch_sh, replicated = _batch_sharding(n_dev)
        arrays = jax.device_put(arrays, replicated)
    outs = []
    for i in range(n_chunks):
        sl = lambda x: x[i * chunk : (i + 1) * chunk] if eqx.is_array(x) else x  # noqa: E731
        laws_c, weights_c = jax.tree_util.tree_map(sl, laws_p), sl(weights_p)
        if n_dev > 1:
            laws_c = eqx.combine(jax.device_put(eqx.filter(laws_c, eqx.is_array), batch_sh), eqx.filter(laws_c, eqx.is_array, inverse=True))
            weights_c = jax.device_put(weights_c, batch_sh)
        outs.append(_solve_jit(laws_c, weights_c, arrays, config))
    jax.block_until_ready(outs)  # surface out-of-memory errors here, where the caller can retry smaller
    if n_chunks == 1 and not pad:
        return outs[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs)[:B] if eqx.is_array(xs[0]) else xs[0], *outs)


def init_starts(law, key: jax.Array, n: int, summary: DataSummary, dtype: str = "float64") -> AbstractLaw:
    """A batch of ``n`` starting points: ``law.init`` vmapped over keys; for a law instance, the instance itself
    is start 0 and the others are random draws."""
    cls = _law_class(law)
    keys = jax.random.split(key, n)
    starts = jax.vmap(lambda k: cls.init(k, summary))(keys)
    if isinstance(law, AbstractLaw):
        first = jax.tree_util.tree_map(lambda a: a[None], eqx.filter(law, eqx.is_inexact_array))
        starts = eqx.combine(
            jax.tree_util.tree_map(lambda s, a: s.at[0].set(a[0].astype(s.dtype)), eqx.filter(starts, eqx.is_inexact_array), first),
            eqx.filter(law, eqx.is_inexact_array, inverse=True),
        )
    dt = jnp.dtype(dtype)
    return jax.tree_util.tree_map(lambda x: x.astype(dt) if eqx.is_inexact_array(x) else x, starts)


def best_of(result: FitResult, axis: int = -1) -> tuple[FitResult, jax.Array]:
    """For each group along ``axis`` (the starts), the best member that did not fail, and its index.
    Groups whose members all failed return member 0 with status ``nonfinite``."""
    loss = jnp.where(result.status != int(Status.nonfinite), result.loss, jnp.inf)
    loss = jnp.where(jnp.isfinite(loss), loss, jnp.inf)
    idx = jnp.argmin(loss, axis=axis)

    def pick(x):
        x = jnp.moveaxis(x, axis if axis >= 0 else loss.ndim + axis, loss.ndim - 1) if x.ndim >= loss.ndim else x
        ix = idx.reshape(idx.shape + (1,) + (1,) * (x.ndim - loss.ndim))
        return jnp.take_along_axis(x, ix, axis=loss.ndim - 1).squeeze(loss.ndim - 1)

    return jax.tree_util.tree_map(lambda x: pick(x) if eqx.is_array(x) else x, result), idx


# --------------------------------------------------------------------------- user-facing fit
@dataclasses.dataclass
class Fit:
    """A fitted law with everything needed to judge and reproduce it.

    Attributes: ``law`` (the best start), ``loss`` (its objective), ``status``, ``num_steps``, ``starts`` (the
    :class:`FitResult` of every start), ``config`` (:class:`FitConfig`), ``info`` (data selection, mask rule,
    initialization scheme, seed, timings: what fitting-pitfall surveys ask a fit to record)."""

    law: AbstractLaw
    loss: float
    status: Status
    num_steps: int
    starts: FitResult
    config: FitConfig
    info: dict[str, Any]

    @property
    def n_params(self) -> int:
        return n_params(self.law)

    def params(self) -> dict[str, np.ndarray]:
        """Readable parameter values by name (numpy arrays)."""
        return {k: np.asarray(v) for k, v in self.law.params().items()}

    def predict(self, data: MixtureData) -> np.ndarray:
        """Predicted losses ``(n, V)`` for every row of ``data`` (in the law's target order: the training domains
        for per-domain laws)."""
        arrays, _ = prepare(self.law, data, mask_zero_weight=False, dtype=self.config.dtype)
        return np.asarray(jax.vmap(self.law)(arrays.h, arrays.N, arrays.D))

    def evaluate(self, data: MixtureData, *, mask_zero_weight: bool | None = None) -> dict:
        """MRE / MAE / RMSE (overall and per target) on ``data``, over the cells a fit of this law counts."""
        if mask_zero_weight is None:
            mask_zero_weight = self.info.get("mask_zero_weight")
        arrays, obs = prepare(self.law, data, mask_zero_weight=mask_zero_weight, dtype=self.config.dtype)
        pred = np.asarray(jax.vmap(self.law)(arrays.h, arrays.N, arrays.D))
        return metric_table(pred, obs, np.isfinite(obs), self.info["targets"])

    def __repr__(self) -> str:
        return (
            f"Fit(law={self.info['law']}, n_params={self.n_params}, loss={self.loss:.6g}, status={self.status.name}, "
            f"starts={self.info['starts']} {self.info['start_status']}, data={self.info['data']!r} rows={self.info['n_rows']})"
        )


def fit(
    law,
    data: MixtureData,
    *,
    starts: int = 16,
    seed: int = 0,
    objective: str = "mse",
    optimizer: str = "lbfgs",
    max_steps: int = 400,
    weights: Any = None,
    mask_zero_weight: bool | None = None,
    dtype: str = "float64",
    throw: bool = True,
    **config_kwargs,
) -> Fit:
    """Fit a law to a dataset from ``starts`` random initializations in one compiled, vmapped call; keep the best.

    Args:
      law: a law name (``"capacity_noise"``), an :class:`AbstractLaw` subclass, or an instance (used as start 0).
      data: a :class:`MixtureData`; every row is used with its own model size and token count.
      starts: number of random starting points (drawn by ``law.init`` with ``jax.random.PRNGKey(seed)``).
      objective, optimizer, max_steps, dtype, **config_kwargs: see :class:`FitConfig`.
      weights: optional ``(n,)`` non-negative row weights (a bootstrap resample is expressed this way).
      mask_zero_weight: exclude cells whose own domain weight is 0 (default: the law's preference).
      throw: raise if every start failed (otherwise return the failed fit with status ``nonfinite``).
    """
    cfg = FitConfig(objective=objective, optimizer=optimizer, max_steps=max_steps, dtype=dtype, **config_kwargs)
    cls = _law_class(law)
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    arrays, _ = prepare(cls, data, mask_zero_weight=mask_zero_weight, dtype=dtype)
    summary = summarize(arrays, data)
    template = law if isinstance(law, AbstractLaw) else None
    starts_batch = init_starts(template or cls, jax.random.PRNGKey(seed), starts, summary, dtype)
    k = n_params(jax.tree_util.tree_map(lambda x: x[0], starts_batch))
    n_cells = int(np.asarray(arrays.mask).sum())
    if n_cells < k:
        raise DataError(
            f"{data.name!r} has {n_cells} measured loss cells for the {k} free parameters of {cls.name}: the fit is "
            "underdetermined; add rows or choose a law with fewer parameters"
        )
    if weights is None:
        w = np.ones(data.n_rows)
    else:
        w = np.array(weights, dtype=np.float64, copy=True)
        if w.shape != (data.n_rows,):
            raise ValueError(f"weights has shape {w.shape}, expected ({data.n_rows},)")
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
    W = jnp.broadcast_to(jnp.asarray(w, jnp.dtype(dtype)), (starts, data.n_rows))
    t0 = time.perf_counter()
    res = solve(starts_batch, W, arrays, cfg)
    jax.block_until_ready(res.loss)
    elapsed = time.perf_counter() - t0
    best, idx = best_of(res)
    status = Status(int(best.status))
    if throw and status == Status.nonfinite:
        raise RuntimeError(f"every one of {starts} starts of {cls.name} failed (non-finite objective); check the data and the starts")
    y_used = np.asarray(arrays.mask)
    info = {
        "law": cls.name,
        "law_reference": cls.reference,
        "data": data.name,
        "n_rows": data.n_rows,
        "n_cells": n_cells,
        "domains": list(data.domains),
        "targets": list(data.domains) if cls.per_domain else list(data.targets),
        "scales": [[a, b] for a, b, _ in data.scales()],
        "units": {"model_size": "millions of parameters", "n_tokens": "billions of tokens"},
        "mask_zero_weight": bool(cls.mask_zero_weight if mask_zero_weight is None else mask_zero_weight),
        "cells_per_target": y_used.sum(0).tolist(),
        "loss_scale": "log" if objective == "huber_log" else "raw",
        "init": f"{cls.name}.init random draws, jax.random.PRNGKey({seed}), {starts} starts" + (" (start 0 = given law)" if template else ""),
        "seed": seed,
        "starts": starts,
        "best_start": int(idx),
        "start_status": status_counts(res.status),
        "weights": "uniform" if weights is None else "user row weights",
        "seconds": elapsed,
        "backend": jax.default_backend(),
    }
    return Fit(law=best.law, loss=float(best.loss), status=status, num_steps=int(best.num_steps), starts=res, config=cfg, info=info)
