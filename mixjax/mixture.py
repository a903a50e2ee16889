"""Optimal mixtures on the box-constrained simplex, by autodiff through a fitted law.

Problem, at one scale (model size N in **millions of parameters**, tokens D in **billions of tokens**, the laws'
units)::

    h* = argmin_h  J(L(h, N, D))   s.t.  sum_i h_i = 1,  lo_i <= h_i <= hi_i

with ``J`` the mean loss over targets, a weighted mean ``sum_j w_j L_j / sum_j w_j``, one target, or any
differentiable function of the predicted losses. Ceilings combine user caps with data availability: a domain with
U_i unique tokens repeated at most ``max_epochs`` times gives ``h_i D <= max_epochs U_i``.

Solver: adaptive entropic mirror descent (exponentiated gradient; Dai & Zheng solve the outer problem with online
mirror descent). A step from a feasible h with gradient g and step eta is the exact Bregman (KL) projection

    h+ = argmin_{h' in C} <g, h'> + KL(h' || h) / eta,   i.e.  h+_i = clip(h_i exp(-eta g_i) / Z, lo_i, hi_i),

where the normalizer Z is found exactly (:func:`project_capped_simplex_kl`). The step is accepted when the descent
lemma ``J(h+) <= J(h) + <g, h+ - h> + KL(h+ || h) / eta`` holds (else eta is halved), and eta doubles after each
accepted step. ``method="projected"`` uses the Euclidean projection (:func:`project_capped_simplex`) and the
squared distance instead. Convergence: the KKT residual ``||h - P(h - g)||_inf`` (Euclidean projection P, zero
exactly at a KKT point) below ``gtol``, or a relative objective decrease below ``ftol`` for ``patience`` steps.

Many starts (the projected centre and Dirichlet(1) draws) run in one ``jax.jit`` call, ``vmap``-ped, and the best
is kept; :func:`optimize_mixture_ensemble` adds a second ``vmap`` over a batched law (a bootstrap ensemble).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .laws import AbstractLaw
from .results import Status, status_counts

__all__ = [
    "MixtureConfig",
    "MixtureResult",
    "MixtureEnsemble",
    "optimize_mixture",
    "optimize_mixture_ensemble",
    "mixture_objective",
    "mixture_bounds",
    "project_capped_simplex",
    "project_capped_simplex_kl",
    "InfeasibleMixtureError",
]

METHODS = ("mirror", "projected")


class InfeasibleMixtureError(ValueError):
    """The floors and ceilings admit no mixture (the message names the domains at fault)."""


# --------------------------------------------------------------------------- exact projections
def _crossing(l, u, total):
    """For h_i(t) = clip(f_i(t), lo_i, hi_i) nondecreasing in t, with breakpoints l_i <= u_i (where coordinate i
    leaves its floor / reaches its ceiling) and ``total(t) = sum_i h_i(t)``: the status of each coordinate on the
    interval where ``total`` crosses 1 (at floor, at ceiling, free)."""
    bp = jnp.concatenate([l, u])
    s = jax.vmap(total)(bp)
    t_b = jnp.min(jnp.where(s >= 1.0, bp, jnp.inf))
    t_a = jnp.max(jnp.where(s < 1.0, bp, -jnp.inf))
    lower = l >= t_b
    upper = (u <= t_a) & ~lower
    return lower, upper, ~lower & ~upper


def project_capped_simplex(v, lo, hi):
    """Euclidean projection of ``v`` onto ``{h : sum h = 1, lo <= h <= hi}``: ``h_i = clip(v_i + t, lo_i, hi_i)``
    with the shift t solved exactly (the sum is piecewise linear in t; the crossing piece is found among the 2K
    breakpoints and solved in closed form). Needs ``sum lo <= 1 <= sum hi``; O(K^2), differentiable almost
    everywhere, traceable under ``jit``/``vmap``."""
    v, lo, hi = jnp.asarray(v), jnp.asarray(lo), jnp.asarray(hi)
    lower, upper, free = _crossing(lo - v, hi - v, lambda t: jnp.sum(jnp.clip(v + t, lo, hi)))
    rest = 1.0 - jnp.sum(jnp.where(lower, lo, 0.0)) - jnp.sum(jnp.where(upper, hi, 0.0))
    n_free = jnp.sum(free)
    t = (rest - jnp.sum(jnp.where(free, v, 0.0))) / jnp.maximum(n_free, 1)
    h = jnp.where(lower, lo, jnp.where(upper, hi, v + t))
    return jnp.clip(h, lo, hi)


def project_capped_simplex_kl(log_y, lo, hi):
    """KL (Bregman, negative entropy) projection of the positive vector ``y = exp(log_y)`` onto
    ``{h : sum h = 1, lo <= h <= hi}``: ``h_i = clip(c y_i, lo_i, hi_i)`` with the scale c > 0 solved exactly
    (free coordinates get ``R softmax(log_y)`` restricted to the free set, R = 1 - the clipped mass). Works in
    log space, so any finite ``log_y`` is safe. Needs ``sum lo <= 1 <= sum hi``."""
    log_y, lo, hi = jnp.asarray(log_y), jnp.asarray(lo), jnp.asarray(hi)
    l = jnp.log(lo) - log_y  # noqa: E741  (-inf where lo = 0)
    u = jnp.log(hi) - log_y  # -inf where hi = 0
    lower, upper, free = _crossing(l, u, lambda t: jnp.sum(jnp.clip(jnp.exp(t + log_y), lo, hi)))
    rest = 1.0 - jnp.sum(jnp.where(lower, lo, 0.0)) - jnp.sum(jnp.where(upper, hi, 0.0))
    z = jnp.where(free, log_y, -jnp.inf)
    p = jnp.exp(z - jnp.max(jnp.where(free, log_y, jnp.min(log_y))))
    p = p / jnp.maximum(jnp.sum(p), jnp.finfo(p.dtype).tiny)
    h = jnp.where(lower, lo, jnp.where(upper, hi, jnp.maximum(rest, 0.0) * p))
    return jnp.clip(h, lo, hi)


# --------------------------------------------------------------------------- constraints
def _per_domain(value, K: int, domains: Sequence[str], label: str, default: float) -> np.ndarray:
    """A per-domain vector from None, a number, a length-K sequence, or a ``{domain: value}`` mapping."""
    if value is None:
        return np.full(K, default)
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in domains]
        if unknown:
            raise ValueError(f"{label}: unknown domain(s) {unknown}; domains are {list(domains)}")
        out = np.full(K, default)
        for k, v in value.items():
            out[list(domains).index(k)] = float(v)
    else:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            out = np.full(K, float(arr))
        elif arr.shape == (K,):
            out = arr.copy()
        else:
            raise ValueError(f"{label} has shape {arr.shape}; expected a number, {K} values or a {{domain: value}} mapping")
    bad = np.flatnonzero(~np.isfinite(out) & ~(out == np.inf))
    if bad.size:
        raise ValueError(f"{label} for domain {domains[bad[0]]!r} is {out[bad[0]]!r}; expected a finite number")
    return out


def mixture_bounds(
    n_domains: int,
    *,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    n_tokens: float | None = None,
    domains: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain bounds ``(lo, hi)`` of the feasible set, checked for feasibility.

    floors / ceilings: a number (every domain), K numbers, or ``{domain: value}``; weights in [0, 1].
    unique_tokens: U_i per domain (same form; in the units of ``n_tokens``), with ``max_epochs`` E (default 1):
    adds the ceiling ``h_i <= E U_i / n_tokens``. Raises :class:`InfeasibleMixtureError` naming the domains when
    a floor exceeds its ceiling, the floors sum above 1, or the ceilings sum below 1."""
    K = int(n_domains)
    names = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(K))
    if len(names) != K:
        raise ValueError(f"{len(names)} domain names for {K} domains")
    lo = _per_domain(floors, K, names, "floors", 0.0)
    hi = _per_domain(ceilings, K, names, "ceilings", 1.0)
    for arr, label in ((lo, "floor"), (hi, "ceiling")):
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise ValueError(f"{label} of domain {names[neg[0]]!r} is {arr[neg[0]]!r}; mixture weights are >= 0")
    big = np.flatnonzero(lo > 1)
    if big.size:
        raise InfeasibleMixtureError(f"floor of domain {names[big[0]]!r} is {lo[big[0]]!r} > 1")
    hi = np.minimum(hi, 1.0)
    avail = np.full(K, np.inf)
    if unique_tokens is not None:
        if n_tokens is None or not (math.isfinite(n_tokens) and n_tokens > 0):
            raise ValueError(f"unique_tokens needs the training token count n_tokens > 0, got {n_tokens!r}")
        U = _per_domain(unique_tokens, K, names, "unique_tokens", np.inf)
        if (U < 0).any():
            i = int(np.flatnonzero(U < 0)[0])
            raise ValueError(f"unique_tokens of domain {names[i]!r} is {U[i]!r}; expected >= 0")
        E = 1.0 if max_epochs is None else _per_domain(max_epochs, K, names, "max_epochs", 1.0)
        if np.any(np.asarray(E) <= 0):
            raise ValueError(f"max_epochs must be > 0, got {max_epochs!r}")
        avail = np.asarray(E) * U / float(n_tokens)
        hi = np.minimum(hi, avail)
    elif max_epochs is not None:
        raise ValueError("max_epochs needs unique_tokens (the unique tokens available per domain)")
    bad = np.flatnonzero(lo > hi * (1 + 1e-12) + 1e-15)
    if bad.size:
        desc = ", ".join(
            f"{names[i]} (floor {lo[i]:.6g} > ceiling {hi[i]:.6g}{' from data availability' if avail[i] <= hi[i] else ''})" for i in bad
        )
        raise InfeasibleMixtureError(f"floor above ceiling for domain(s): {desc}")
    hi = np.maximum(hi, lo)
    if lo.sum() > 1 + 1e-12:
        pos = [f"{names[i]}={lo[i]:.4g}" for i in np.flatnonzero(lo > 0)]
        raise InfeasibleMixtureError(f"floors sum to {lo.sum():.6g} > 1: {', '.join(pos)}")
    if hi.sum() < 1 - 1e-12:
        caps = [f"{names[i]}={hi[i]:.4g}{' (data availability)' if avail[i] <= hi[i] else ''}" for i in range(K)]
        raise InfeasibleMixtureError(f"ceilings sum to {hi.sum():.6g} < 1, no mixture fits: {', '.join(caps)}")
    return lo, hi


# --------------------------------------------------------------------------- objectives
class _Weighted(eqx.Module):
    """J(L) = sum_j w_j L_j (w normalized to sum 1): mean, weighted mean or a single target."""

    def __call__(self, losses, w):
        return jnp.dot(w, losses)


@dataclasses.dataclass(frozen=True)
class _UserObjective:
    """A user's differentiable ``objective(losses) -> scalar`` (static under jit: one compile per function)."""

    fn: Callable

    def __call__(self, losses, w):
        return jnp.asarray(self.fn(losses)).reshape(())


def _objective_spec(V: int, objective, target_weights, target, targets: Sequence[str] | None):
    """(callable, normalized weights (V,), description) for the objective arguments."""
    names = list(targets) if targets is not None else [f"target{j}" for j in range(V)]
    if target is not None and target_weights is not None:
        raise ValueError("give either target (one target) or target_weights, not both")
    if callable(objective):
        if target is not None or target_weights is not None:
            raise ValueError("a callable objective takes the predicted losses itself; drop target/target_weights")
        return _UserObjective(objective), np.full(V, 1.0 / V), f"user objective {getattr(objective, '__name__', repr(objective))}"
    if objective not in ("mean", "weighted", "target"):
        raise ValueError(f"objective must be 'mean', 'weighted', 'target' or a callable losses -> scalar, got {objective!r}")
    if target is not None:
        if isinstance(target, (int, np.integer)):
            j = int(target)
            if not 0 <= j < V:
                raise ValueError(f"target index {j} out of range for {V} targets")
        else:
            if target not in names:
                raise ValueError(f"unknown target {target!r}; targets are {names}")
            j = names.index(target)
        w = np.zeros(V)
        w[j] = 1.0
        return _Weighted(), w, f"loss of target {names[j]}"
    if target_weights is not None:
        w = _per_domain(target_weights, V, names, "target_weights", 0.0)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"target_weights must be finite, >= 0 and not all 0, got {w.tolist()}")
        return _Weighted(), w / w.sum(), "weighted mean loss (" + ", ".join(f"{n}={x:.3g}" for n, x in zip(names, w / w.sum())) + ")"
    if objective != "mean":
        raise ValueError(f"objective={objective!r} needs {'target' if objective == 'target' else 'target_weights'}")
    return _Weighted(), np.full(V, 1.0 / V), f"mean loss over {V} targets"


def mixture_objective(law: AbstractLaw, *, model_size=1.0, n_tokens=1.0, objective="mean", target_weights=None, target=None, targets=None):
    """The scalar function ``h -> J(law(h, N, D))`` that :func:`optimize_mixture` minimizes (differentiable with
    ``jax.grad``; N in millions of parameters, D in billions of tokens)."""
    law = getattr(law, "law", law)
    V = jax.eval_shape(law, jnp.zeros(_n_domains(law)), jnp.asarray(1.0), jnp.asarray(1.0)).shape[0]
    fn, w, _ = _objective_spec(V, objective, target_weights, target, targets)
    w = jnp.asarray(w)
    N, D = jnp.asarray(float(model_size)), jnp.asarray(float(n_tokens))
    return lambda h: fn(law(h, N, D), w)


# --------------------------------------------------------------------------- the solver
@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """Solver settings (hashable: static under ``jax.jit``).

    method: "mirror" (entropic mirror descent, KL projection) or "projected" (Euclidean projected gradient).
    steps: most accepted steps per start. step_size: first step eta. ftol/patience, gtol: see the module doc.
    max_backtracks: halvings of eta tried per step before the point is declared converged (roundoff level).
    """

    method: str = "mirror"
    steps: int = 3000
    step_size: float = 1.0
    ftol: float = 1e-14
    gtol: float = 1e-10
    patience: int = 20
    max_backtracks: int = 50

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}")


class _Solved(eqx.Module):
    mixture: jax.Array
    value: jax.Array
    losses: jax.Array
    status: jax.Array
    num_steps: jax.Array
    kkt: jax.Array


def _descend(law, h0, lo, hi, N, D, w, objective, config: MixtureConfig) -> _Solved:
    """Adaptive mirror (or projected) descent from one feasible start; see the module docstring."""
    dtype = h0.dtype
    tiny = jnp.finfo(dtype).tiny

    def F(h):
        return objective(law(h, N, D), w)

    vg = jax.value_and_grad(F)
    mirror = config.method == "mirror"

    def candidate(h, g, eta):
        if mirror:
            gs = g - jnp.min(jnp.where(jnp.isfinite(g), g, 0.0))
            return project_capped_simplex_kl(jnp.log(jnp.maximum(h, tiny)) - eta * gs, lo, hi)
        return project_capped_simplex(h - eta * g, lo, hi)

    def divergence(hn, h):
        if mirror:
            return jnp.sum(jnp.where(hn > 0, hn * (jnp.log(jnp.maximum(hn, tiny)) - jnp.log(jnp.maximum(h, tiny))), 0.0) - hn + h)
        return 0.5 * jnp.sum((hn - h) ** 2)

    def kkt(h, g):
        return jnp.max(jnp.abs(h - project_capped_simplex(h - g, lo, hi)))

    f0, g0 = vg(h0)
    finite0 = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))

    def cond(c):
        return (c["step"] < config.steps) & (c["status"] < 0)

    def body(c):
        h, f, g = c["h"], c["f"], c["g"]

        def t_cond(s):
            return (~s["ok"]) & (s["tries"] < config.max_backtracks)

        def t_body(s):
            hn = candidate(h, g, s["eta"])
            fn, gn = vg(hn)
            bound = f + jnp.dot(g, hn - h) + divergence(hn, h) / s["eta"]
            ok = jnp.isfinite(fn) & jnp.all(jnp.isfinite(gn)) & (fn <= bound + 4 * jnp.finfo(dtype).eps * jnp.abs(f))
            return {"eta": jnp.where(ok, s["eta"], 0.5 * s["eta"]), "h": hn, "f": fn, "g": gn, "ok": ok, "tries": s["tries"] + 1}

        s0 = {"eta": c["eta"], "h": h, "f": f, "g": g, "ok": jnp.array(False), "tries": jnp.array(0)}
        s = jax.lax.while_loop(t_cond, t_body, s0)
        ok = s["ok"]
        hn = jnp.where(ok, s["h"], h)
        fn = jnp.where(ok, s["f"], f)
        gn = jnp.where(ok, s["g"], g)
        small = (f - fn) <= config.ftol * jnp.maximum(jnp.abs(f), tiny)
        calm = jnp.where(small, c["calm"] + 1, 0)
        r = kkt(hn, gn)
        done = (~ok) | (calm >= config.patience) | (r <= config.gtol)
        return {
            "h": hn,
            "f": fn,
            "g": gn,
            "eta": jnp.where(ok, 2.0 * s["eta"], s["eta"]),
            "step": c["step"] + 1,
            "calm": calm,
            "kkt": r,
            "status": jnp.where(done, int(Status.converged), -1),
        }

    carry = {
        "h": h0,
        "f": f0,
        "g": jnp.where(jnp.isfinite(g0), g0, 0.0),
        "eta": jnp.asarray(config.step_size, dtype),
        "step": jnp.array(0),
        "calm": jnp.array(0),
        "kkt": jnp.asarray(jnp.inf, dtype),
        "status": jnp.where(finite0, -1, int(Status.nonfinite)),
    }
    out = jax.lax.while_loop(cond, body, carry)
    status = jnp.where(out["status"] < 0, int(Status.max_steps), out["status"])
    losses = law(out["h"], N, D)
    status = jnp.where(jnp.isfinite(out["f"]) & jnp.all(jnp.isfinite(losses)), status, int(Status.nonfinite))
    return _Solved(out["h"], out["f"], losses, status, out["step"], kkt(out["h"], out["g"]))


@eqx.filter_jit
def _solve_starts(law, h0, lo, hi, N, D, w, objective, config):
    return jax.vmap(lambda h: _descend(law, h, lo, hi, N, D, w, objective, config))(h0)


@eqx.filter_jit
def _solve_ensemble(laws, h0, lo, hi, N, D, w, objective, config):
    def one(law):
        return jax.vmap(lambda h: _descend(law, h, lo, hi, N, D, w, objective, config))(h0)

    return eqx.filter_vmap(one)(laws)


_project_kl_batch = jax.jit(jax.vmap(project_capped_simplex_kl, in_axes=(0, None, None)))
_project_batch = jax.jit(jax.vmap(project_capped_simplex, in_axes=(0, None, None)))


def _starts(K: int, n: int, seed: int, lo, hi, init, dtype) -> jax.Array:
    """Start 0: the given ``init`` (projected) or the KL projection of the uniform mixture; then Dirichlet(1)."""
    if n < 1:
        raise ValueError(f"starts must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(np.ones(K), size=n)
    draws[0] = 1.0 / K
    draws = 0.98 * draws + 0.02 / K  # strictly inside, so every coordinate can move multiplicatively
    h = _project_kl_batch(jnp.log(jnp.asarray(draws, dtype)), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
    if init is not None:
        h0 = np.asarray(init, np.float64).reshape(-1)
        if h0.shape != (K,) or not np.isfinite(h0).all():
            raise ValueError(f"init must be {K} finite weights, got shape {h0.shape}")
        first = _project_batch(jnp.asarray(h0[None], dtype), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
        h = h.at[0].set(first[0])
    return h


# --------------------------------------------------------------------------- results
@dataclasses.dataclass
class MixtureResult:
    """The optimal mixture at one scale.

    Attributes: ``mixture`` (K,), predicted ``losses`` (V,) there, the objective ``value``, ``status``
    (:class:`Status` of the best start), ``num_steps``, ``kkt_residual`` (||h - P(h - grad)||_inf, 0 at an exact
    KKT point), per-start ``start_values`` / ``start_mixtures`` / ``start_status``, the bounds ``lower`` /
    ``upper`` that were enforced, names ``domains`` / ``targets``, the scale (``model_size`` in millions of
    parameters, ``n_tokens`` in billions of tokens) and ``objective`` (a description)."""

    mixture: np.ndarray
    losses: np.ndarray
    value: float
    status: Status
    num_steps: int
    kkt_residual: float
    start_values: np.ndarray
    start_mixtures: np.ndarray
    start_status: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    model_size: float
    n_tokens: float
    objective: str
    config: MixtureConfig

    @property
    def at_floor(self) -> np.ndarray:
        return self.mixture <= self.lower + 1e-9

    @property
    def at_ceiling(self) -> np.ndarray:
        return self.mixture >= self.upper - 1e-9

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "mixture": {d: float(x) for d, x in zip(self.domains, self.mixture)},
            "predicted_loss": {t: float(x) for t, x in zip(self.targets, self.losses)},
            "objective": self.objective,
            "objective_value": float(self.value),
            "status": self.status.name,
            "num_steps": int(self.num_steps),
            "kkt_residual": float(self.kkt_residual),
            "model_size_m": self.model_size,
            "n_tokens_b": self.n_tokens,
            "lower": {d: float(x) for d, x in zip(self.domains, self.lower)},
            "upper": {d: float(x) for d, x in zip(self.domains, self.upper)},
            "active": {d: ("floor" if f else "ceiling" if c else "free") for d, f, c in zip(self.domains, self.at_floor, self.at_ceiling)},
            "start_values": [float(v) for v in self.start_values],
            "start_status": status_counts(self.start_status),
            "method": self.config.method,
        }

    def __repr__(self) -> str:
        mix = ", ".join(f"{d}={x:.4f}" for d, x in zip(self.domains, self.mixture))
        return (
            f"MixtureResult({mix}; {self.objective} = {self.value:.6g} at N={self.model_size:g}M, D={self.n_tokens:g}B; "
            f"status={self.status.name}, kkt={self.kkt_residual:.2g}, starts={status_counts(self.start_status)})"
        )


def _percentile_interval(x: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = 100 * (1 - level) / 2
    return np.percentile(x, a, axis=0), np.percentile(x, 100 - a, axis=0)


@dataclasses.dataclass
class MixtureEnsemble:
    """Optimal mixtures of every member of a law ensemble (e.g. bootstrap refits), at one scale.

    ``mixtures`` (R, K), ``values`` (R,), ``losses`` (R, V), ``status`` (R,) of each member's best start,
    ``ok`` (R,): members used in summaries (the ensemble's own mask and a finite optimum); ``point``: the optimum
    of a point-estimate law when one was given. Intervals are percentile intervals over the ``ok`` members."""

    mixtures: np.ndarray
    values: np.ndarray
    losses: np.ndarray
    status: np.ndarray
    ok: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    model_size: float
    n_tokens: float
    objective: str
    point: MixtureResult | None = None

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    def _need(self):
        if not self.ok.any():
            raise RuntimeError("no ensemble member has a usable optimum (every member failed or was excluded)")

    def median(self) -> np.ndarray:
        self._need()
        return np.median(self.mixtures[self.ok], axis=0)

    def interval(self, level: float = 0.95, what: str = "mixture") -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of ``"mixture"`` (K,), ``"losses"`` (V,) or ``"value"`` over the usable members."""
        self._need()
        arr = {"mixture": self.mixtures, "losses": self.losses, "value": self.values}.get(what)
        if arr is None:
            raise ValueError(f"what must be 'mixture', 'losses' or 'value', got {what!r}")
        return _percentile_interval(arr[self.ok], level)

    def as_dict(self, level: float = 0.95) -> dict[str, Any]:
        self._need()
        lo, hi = self.interval(level)
        llo, lhi = self.interval(level, "losses")
        vlo, vhi = self.interval(level, "value")
        return {
            "level": level,
            "members": int(self.ok.size),
            "members_used": self.n_ok,
            "member_status": status_counts(self.status),
            "mixture_median": {d: float(x) for d, x in zip(self.domains, self.median())},
            "mixture_interval": {d: [float(a), float(b)] for d, a, b in zip(self.domains, lo, hi)},
            "predicted_loss_interval": {t: [float(a), float(b)] for t, a, b in zip(self.targets, llo, lhi)},
            "objective_value_interval": [float(vlo), float(vhi)],
        }


# --------------------------------------------------------------------------- entry points
def _n_domains(law) -> int:
    """K for a law: its ``n_domains`` if it has one, else the trailing parameter size that the law accepts as a
    mixture length (tried by shape evaluation, most common size first)."""
    n = getattr(law, "n_domains", None)
    if isinstance(n, (int, np.integer)):
        return int(n)
    sizes = [int(np.shape(x)[-1]) for x in jax.tree_util.tree_leaves(eqx.filter(law, eqx.is_array)) if np.ndim(x) >= 1]
    for k in sorted(set(sizes) - {1}, key=lambda k: -sizes.count(k)):
        try:
            jax.eval_shape(law, jnp.zeros(k), jnp.asarray(1.0), jnp.asarray(1.0))
            return k
        except Exception:  # noqa: BLE001  (a shape error: not the mixture length)
            continue
    raise ValueError(f"cannot tell the number of domains of {type(law).__name__}; pass domains=[...]")


def _unpack(law, domains, targets):
    """(law, domains, targets) from a law, a ``Fit`` or an ensemble object carrying names."""
    info = getattr(law, "info", None)
    if isinstance(info, dict):
        domains = domains if domains is not None else info.get("domains")
        targets = targets if targets is not None else info.get("targets")
    if hasattr(law, "law") and isinstance(law.law, AbstractLaw):
        law = law.law
    if not isinstance(law, AbstractLaw):
        raise TypeError(f"law must be an AbstractLaw instance or a Fit, got {type(law).__name__}")
    return law, domains, targets


def _scale(law, model_size, n_tokens, raw_model_size, raw_n_tokens):
    if raw_model_size is not None:
        if model_size is not None:
            raise ValueError("give model_size (millions of parameters) or raw_model_size (parameters), not both")
        model_size = float(raw_model_size) / 1e6
    if raw_n_tokens is not None:
        if n_tokens is not None:
            raise ValueError("give n_tokens (billions of tokens) or raw_n_tokens (tokens), not both")
        n_tokens = float(raw_n_tokens) / 1e9
    cls = type(law)
    for flag, v, label in ((cls.uses_model_size, model_size, "model_size (millions of parameters)"), (cls.uses_tokens, n_tokens, "n_tokens (billions of tokens)")):
        if v is None:
            if flag:
                raise ValueError(f"law {cls.name} depends on {label}; pass it")
        elif not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{label.split()[0]} must be a positive finite number, got {v!r}")
    return (1.0 if model_size is None else float(model_size)), (1.0 if n_tokens is None else float(n_tokens))


def _setup(law, domains, targets, model_size, n_tokens, raw_model_size, raw_n_tokens, objective, target_weights, target,
           floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched):
    law1 = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, law) if batched else law
    K = len(domains) if domains is not None else _n_domains(law1)
    domains = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(K))
    if len(domains) != K:
        raise ValueError(f"{len(domains)} domain names for a law of {K} domains")
    N, D = _scale(law1, model_size, n_tokens, raw_model_size, raw_n_tokens)
    dtype = jnp.result_type(*[x for x in jax.tree_util.tree_leaves(eqx.filter(law1, eqx.is_inexact_array))] or [float])
    V = jax.eval_shape(law1, jnp.zeros(K, dtype), jnp.asarray(N, dtype), jnp.asarray(D, dtype)).shape[0]
    targets = tuple(targets) if targets is not None else (domains if V == K else tuple(f"target{j}" for j in range(V)))
    if len(targets) != V:
        raise ValueError(f"{len(targets)} target names for a law with {V} targets")
    fn, w, desc = _objective_spec(V, objective, target_weights, target, targets)
    unit = 1e9 if raw_n_tokens is not None else 1.0
    lo, hi = mixture_bounds(K, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens, max_epochs=max_epochs,
                            n_tokens=D * unit, domains=domains)
    cfg = MixtureConfig(method=method, steps=steps, step_size=step_size)
    return dict(K=K, domains=domains, targets=targets, N=N, D=D, dtype=dtype, fn=fn, w=w, desc=desc, lo=lo, hi=hi, cfg=cfg)


def _best(values, status):
    v = np.where((status != int(Status.nonfinite)) & np.isfinite(values), values, np.inf)
    return np.argmin(v, axis=-1)


def optimize_mixture(
    law,
    *,
    model_size: float | None = None,
    n_tokens: float | None = None,
    objective: str | Callable = "mean",
    target_weights=None,
    target: str | int | None = None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    starts: int = 16,
    seed: int = 0,
    steps: int = 3000,
    method: str = "mirror",
    step_size: float = 1.0,
    init=None,
    raw_model_size: float | None = None,
    raw_n_tokens: float | None = None,
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    throw: bool = True,
) -> MixtureResult:
    """The mixture minimizing an objective of a law's predicted losses at one scale, under floors and ceilings.

    Args:
      law: a fitted law (:class:`AbstractLaw`) or a :class:`mixjax.Fit` (whose domain/target names are used).
      model_size: N in **millions** of parameters; n_tokens: D in **billions** of tokens (the laws' units). Or
        give raw counts as ``raw_model_size`` (parameters) / ``raw_n_tokens`` (tokens).
      objective: "mean" (mean predicted loss over targets), or a differentiable ``callable(losses (V,)) ->
        scalar``; ``target_weights`` (V numbers or ``{target: w}``) gives a weighted mean, ``target`` (name or
        index) one target's loss.
      floors, ceilings: per-domain bounds on the weights (a number, K numbers or ``{domain: value}``).
      unique_tokens, max_epochs: data availability, ``h_i D <= max_epochs U_i`` with U_i in the units of the
        token count given (billions with ``n_tokens``, raw tokens with ``raw_n_tokens``); max_epochs defaults to 1.
      starts, seed: start 0 is ``init`` or the centre of the feasible set, the rest Dirichlet(1) draws (``seed``);
        all run in one compiled, vmapped call and the best is kept.
      steps, method, step_size: see :class:`MixtureConfig`.
      throw: raise if every start failed (non-finite objective); otherwise return the failure with its status.
    """
    law, domains, targets = _unpack(law, domains, targets)
    s = _setup(law, domains, targets, model_size, n_tokens, raw_model_size, raw_n_tokens, objective, target_weights,
               target, floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched=False)
    dt = s["dtype"]
    lo, hi = jnp.asarray(s["lo"], dt), jnp.asarray(s["hi"], dt)
    h0 = _starts(s["K"], starts, seed, s["lo"], s["hi"], init, dt)
    out = _solve_starts(law, h0, lo, hi, jnp.asarray(s["N"], dt), jnp.asarray(s["D"], dt), jnp.asarray(s["w"], dt), s["fn"], s["cfg"])
    out = jax.tree_util.tree_map(np.asarray, out)
    i = int(_best(out.value, out.status))
    status = Status(int(out.status[i]))
    if throw and status == Status.nonfinite:
        raise RuntimeError(f"every one of {starts} starts gave a non-finite objective at N={s['N']:g}M, D={s['D']:g}B; check the law's parameters")
    return MixtureResult(
        mixture=out.mixture[i], losses=out.losses[i], value=float(out.value[i]), status=status, num_steps=int(out.num_steps[i]),
        kkt_residual=float(out.kkt[i]), start_values=out.value, start_mixtures=out.mixture, start_status=out.status,
        lower=s["lo"], upper=s["hi"], domains=s["domains"], targets=s["targets"], model_size=s["N"], n_tokens=s["D"],
        objective=s["desc"], config=s["cfg"],
    )


def optimize_mixture_ensemble(
    laws,
    *,
    ok=None,
    point=None,
    model_size: float | None = None,
    n_tokens: float | None = None,
    objective: str | Callable = "mean",
    target_weights=None,
    target: str | int | None = None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    starts: int = 8,
    seed: int = 0,
    steps: int = 3000,
    method: str = "mirror",
    step_size: float = 1.0,
    raw_model_size: float | None = None,
    raw_n_tokens: float | None = None,
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
) -> MixtureEnsemble:
    """Optimal mixtures for every member of a batched law (leading axis R on every parameter array), in one
    compiled call vmapped over members and starts: the distribution of h* under, e.g., bootstrap refits.

    ``laws``: a batched law, or an object with ``.laws`` (batched) and ``.ok`` (R,) such as a
    :class:`mixjax.BootstrapResult` (whose full-data fit ``.point`` becomes the point estimate).
    ``ok``: (R,) mask of members to use (members with ``ok`` False, or whose every start fails, are excluded from
    intervals and medians). ``point``: optionally a single law (or Fit) whose own optimum is added as ``.point``.
    Other arguments as in :func:`optimize_mixture`."""
    if hasattr(laws, "laws") and not isinstance(laws, AbstractLaw):
        if ok is None and hasattr(laws, "ok"):
            ok = laws.ok
        for src in (getattr(laws, "info", None), getattr(getattr(laws, "point", None), "info", None)):
            if isinstance(src, dict):
                domains = domains if domains is not None else src.get("domains")
                targets = targets if targets is not None else src.get("targets")
        if point is None and isinstance(getattr(getattr(laws, "point", None), "law", None), AbstractLaw):
            point = laws.point
        laws = laws.laws
    if not isinstance(laws, AbstractLaw):
        raise TypeError(f"laws must be a batched AbstractLaw (or carry one as .laws), got {type(laws).__name__}")
    leaves = jax.tree_util.tree_leaves(eqx.filter(laws, eqx.is_inexact_array))
    R = {int(np.shape(x)[0]) for x in leaves if np.ndim(x) >= 1}
    if len(R) != 1:
        raise ValueError(f"laws must be batched with one leading axis on every parameter; leading sizes {sorted(R)}")
    R = R.pop()
    ok = np.ones(R, bool) if ok is None else np.asarray(ok, bool).reshape(-1)
    if ok.shape != (R,):
        raise ValueError(f"ok has shape {ok.shape}, expected ({R},)")
    s = _setup(laws, domains, targets, model_size, n_tokens, raw_model_size, raw_n_tokens, objective, target_weights,
               target, floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched=True)
    dt = s["dtype"]
    # failed members may carry non-finite parameters; replace them by member 0's so no NaN enters the batch
    good = np.flatnonzero(ok)
    if good.size and not ok.all():
        ref = int(good[0])
        laws = jax.tree_util.tree_map(lambda x: jnp.where(jnp.asarray(ok).reshape((R,) + (1,) * (x.ndim - 1)), x, x[ref]) if eqx.is_inexact_array(x) else x, laws)
    h0 = _starts(s["K"], starts, seed, s["lo"], s["hi"], None, dt)
    lo, hi = jnp.asarray(s["lo"], dt), jnp.asarray(s["hi"], dt)
    out = _solve_ensemble(laws, h0, lo, hi, jnp.asarray(s["N"], dt), jnp.asarray(s["D"], dt), jnp.asarray(s["w"], dt), s["fn"], s["cfg"])
    out = jax.tree_util.tree_map(np.asarray, out)
    idx = _best(out.value, out.status)
    pick = lambda a: np.take_along_axis(a, idx.reshape((R, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0]  # noqa: E731
    status = pick(out.status)
    values = pick(out.value)
    usable = ok & (status != int(Status.nonfinite)) & np.isfinite(values)
    pt = None
    if point is not None:
        pt = optimize_mixture(point, model_size=s["N"], n_tokens=s["D"], objective=objective, target_weights=target_weights,
                              target=target, floors=s["lo"], ceilings=s["hi"], starts=starts, seed=seed, steps=steps,
                              method=method, step_size=step_size, domains=s["domains"], targets=s["targets"])
    return MixtureEnsemble(
        mixtures=pick(out.mixture), values=values, losses=pick(out.losses), status=status, ok=usable, lower=s["lo"], upper=s["hi"],
        domains=s["domains"], targets=s["targets"], model_size=s["N"], n_tokens=s["D"], objective=s["desc"], point=pt,
    )
