"""The solver of a constrained mixture search (:mod:`mixjax.mixture.phases`): augmented Lagrangian and trust region.

The coupled constraints (repetition caps, as ``epochs_k / E_k - 1 <= 0``; KL bound, ``KL - B <= 0``) are handled by an
augmented Lagrangian (Hestenes-Powell-Rockafellar):
``J + lambda KL + (1/2rho) sum_j (max(0, mu_j + rho c_j g_j)^2 - mu_j^2)`` is minimized over the product of per-phase
simplices by :class:`~mixjax.mixture.solver.SimplexDescent` (block KL projections), warm-started, then
``mu_j <- max(0, mu_j + rho c_j g_j)``. Each cap is scaled by ``c_k = sqrt(cap_k)`` inside the penalty, so that every
cap is equally stiff in the metric of the entropic mirror step (unscaled, a cap of a small domain is 1 / cap_k times
stiffer, and the first-order inner solver stalls far from the optimum); the KL bound is unscaled. rho starts at 10
and grows threefold after a round that did not halve the largest violation, up to 1e6.

Stopping and status (honest): after each round the end point is tested by a KKT certificate (:func:`_certificate`):
feasible to :data:`CONSTRAINT_TOL` and a Euclidean projected-gradient residual of the Lagrangian at most
``_KKT_TOL`` (1e-6) max(1, |J + lambda KL|), with multipliers >= 0 that vanish on slack constraints (the
augmented Lagrangian's own, or least-squares ones for the caps, whichever gives the smaller residual). A member that
passes stops with status ``converged``; one whose violation is below ``CONSTRAINT_TOL / 10`` with its multipliers
(1e-6) or penalized value (1e-9 relative) settled, or one that is feasible with rho at its ceiling and a penalized
value unchanged (1e-10) for 3 rounds, stops too, ``converged`` only if certified, else ``max_steps``, as does one
still running after 40 rounds of 500 steps: the
status of a constrained search never comes from the inner solver's own tests, and ``kkt_residual`` is the
certificate's residual. The answer is verified: its largest violation is reported, and a start whose violation
exceeds :data:`CONSTRAINT_TOL` (1e-7) is not feasible.

The trust region, a union of balls, is nonconvex; the search first solves without it, and if the optimum lies
farther than r from every measured mixture, it solves within the ball of each of the :data:`TRUST_CANDIDATES` (4)
measured mixtures nearest that optimum and keeps the best. Inside one ball the TV constraint is part of the
projection (:func:`~mixjax.mixture.simplex.project_phase_ball`), so every iterate lies in the ball. A better point
in the ball of a farther measured mixture can be missed; raise ``mixjax.mixture.constrained.TRUST_CANDIDATES`` (read
at each call) to search more balls. Every term is compiled in whether used or not, so one program serves every
combination of constraints of a given size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _engine
from ..results import Status
from .phases import PhaseProblem
from .simplex import project_batch, project_kl_batch
from .solver import MixtureConfig, SimplexDescent

__all__ = ["CONSTRAINT_TOL", "TRUST_CANDIDATES"]


#: A constraint violated by at most this much counts as satisfied (repetition caps: epochs / max_epochs - 1; KL
#: bound: nats; trust region: total variation); the solver drives violations far below it.
CONSTRAINT_TOL = 1e-7
#: With a trust radius, the optimum is searched within the ball of each of this many measured mixtures nearest the
#: optimum found without it, and the best is kept.
TRUST_CANDIDATES = 4
_RHO0 = 10.0
# Every term is always compiled in (an unused cap or KL bound is this large, an unused penalty 0), so that one program
# serves every combination of constraints at a given size.
_UNUSED = 1e30
_RHO_MAX = 1e6
_RHO_GROW = 3.0  # rho grows by this factor after a round that did not cut the largest violation by _RHO_NEED
_RHO_NEED = 0.5
_OUTER_STEPS = 40
_INNER_STEPS = 500  # per augmented-Lagrangian iteration (warm-started)


class _Shared(eqx.Module):
    """Data every member of a constrained search shares (arrays) and which terms are on (static)."""

    N: jax.Array
    D: jax.Array
    w: jax.Array
    inv: jax.Array  # law's h = z[inv]
    log_sq: jax.Array  # log(s_p q_k) per block entry (0 where unused)
    lam: jax.Array
    caps: jax.Array
    max_kl: jax.Array
    radius: jax.Array
    gscale: jax.Array  # (G,) scale of each constraint in the augmented Lagrangian (see _constraint_scale)
    objective: Any = eqx.field(static=True)
    P: int = eqx.field(static=True)
    use_kl: bool = eqx.field(static=True)
    use_caps: bool = eqx.field(static=True)
    use_max_kl: bool = eqx.field(static=True)
    use_trust: bool = eqx.field(static=True)


def _kl_blocks(z, log_sq):
    """sum z log(z / (s q)) over the blocks (= sum_p s_p KL(w_p || q)), 0 log 0 = 0, finite gradient at 0."""
    pos = z > 0
    zz = jnp.where(pos, z, 1.0)
    return jnp.sum(jnp.where(pos, zz * (jnp.log(zz) - log_sq), 0.0))


def _parts(z, law, center, sh: _Shared):
    """(objective J, losses, KL, constraint values g) of the block mixture z."""
    losses = law(z[sh.inv], sh.N, sh.D)
    J = sh.objective(losses, sh.w)
    kl = _kl_blocks(z, sh.log_sq) if (sh.use_kl or sh.use_max_kl) else jnp.zeros((), z.dtype)
    g = []
    if sh.use_caps:  # relative: epochs / max_epochs - 1
        g.append(z.reshape(sh.P, -1).sum(0) / sh.caps - 1.0)
    if sh.use_max_kl:
        g.append((kl - sh.max_kl)[None])
    g = jnp.concatenate(g) if g else jnp.zeros((0,), z.dtype)
    return J, losses, kl, g


def _alm_value(z, member, sh: _Shared):
    """Augmented Lagrangian of the constrained search: J + lambda KL + (1 / 2 rho) sum_j (max(0, mu_j + rho g_j)^2 - mu_j^2)."""
    law, center, mu, rho = member
    if sh.use_trust:  # the point carries the trust region's centre (SimplexDescent.radius)
        z = z[: z.shape[0] // 2]
    J, _, kl, g = _parts(z, law, center, sh)
    val = J + (sh.lam * kl if sh.use_kl else 0.0)
    if g.shape[0]:
        g = g * sh.gscale
        val = val + jnp.sum(jnp.maximum(0.0, mu + rho * g) ** 2 - mu**2) / (2.0 * rho)
    return val


class _PhaseSolved(eqx.Module):
    z: jax.Array
    J: jax.Array
    kl: jax.Array
    g: jax.Array
    losses: jax.Array
    status: jax.Array
    num_steps: jax.Array
    kkt: jax.Array


@eqx.filter_jit
def _solve_phase(z0, members, sh: _Shared, lo, hi, shares, config: MixtureConfig, steps):
    law, center, _, _ = members
    solver = SimplexDescent(lo, hi, mirror=config.method == "mirror", step_size=config.step_size, shares=shares,
                            radius=sh.radius if sh.use_trust else None)
    y0 = jnp.concatenate([z0, center], axis=1) if sh.use_trust else z0
    sol = _engine.minimize(solver, _alm_value, y0, members, sh, max_steps=steps, ftol=config.ftol, gtol=config.gtol,
                           window=config.patience)
    z = sol.y[:, : z0.shape[1]]
    J, losses, kl, g = jax.vmap(lambda z, lw, c: _parts(z, lw, c, sh))(z, law, center)
    ok = jnp.isfinite(sol.value) & jnp.isfinite(J) & jnp.all(jnp.isfinite(losses), axis=-1)
    status = jnp.where(ok, sol.status, int(Status.nonfinite))
    return _PhaseSolved(z, J, kl, g, losses, status, sol.num_steps, sol.rel_grad * jnp.abs(sol.value))


#: The search is ``converged`` when a KKT certificate holds: feasible to :data:`CONSTRAINT_TOL` and, with multipliers
#: >= 0 that vanish on every constraint slack by more than _ACTIVE (relative), a Euclidean projected-gradient residual
#: of the Lagrangian on the per-phase simplices ``||z - P(z - grad L)||_inf`` at most _KKT_TOL max(1, |J + lambda KL|).
_KKT_TOL = 1e-6
_ACTIVE = 1e-6


@eqx.filter_jit
def _certificate(z, members, sh: _Shared, lo, hi, shares):
    """KKT residual of each member's end point z for the original constrained problem, minimized over two choices of
    multipliers: the augmented Lagrangian's own (``max(0, mu + rho g)``, zeroed on inactive constraints), and
    least-squares ones for the caps (the per-phase shift nu_p from the free coordinates of domains whose cap is slack,
    then ``a_k = max(0, mean over free phases (nu_p - dF_pk))`` on binding caps). Any multipliers >= 0 obeying
    complementary slackness certify: the smaller residual is reported. Returns (residual, scale) per member."""
    law, center, mu, rho = members
    P = sh.P
    # the search's own feasible set (per-phase simplices, and the trust region's ball where there is one)
    solver = SimplexDescent(lo, hi, mirror=False, shares=shares, radius=sh.radius if sh.use_trust else None)
    L = (lo if shares is None else shares[:, None] * lo).reshape(P, -1)
    U = (hi if shares is None else shares[:, None] * hi).reshape(P, -1)

    def one(z, law, center, mu, rho):
        J, _, kl, g = _parts(z, law, center, sh)
        new = jnp.maximum(0.0, mu + rho * g * sh.gscale)
        active = g >= -_ACTIVE
        mult = jnp.where(active, new * sh.gscale, 0.0)  # per unit of the unscaled constraint g
        K = z.shape[0] // P

        def lag(zz):
            J, _, kl, gg = _parts(zz, law, center, sh)
            return J + sh.lam * kl + mult[-1] * gg[-1]

        G = jax.grad(lag)(z).reshape(P, K)
        zz = z.reshape(P, K)
        d_cap = 1.0 / sh.caps  # d g_k / d z_pk

        def res(a):  # ||z - P(z - grad L)||_inf with cap multipliers a
            grad = (G + a[None, :]).reshape(-1)
            if sh.use_trust:  # the point carries the trust region's centre, which the projection leaves in place
                n = z.shape[0]
                return jnp.max(jnp.abs(solver.projected_gradient(jnp.concatenate([z, center]),
                                                                 jnp.concatenate([grad, jnp.zeros_like(center)]))[:n]))
            return jnp.max(jnp.abs(solver.projected_gradient(z, grad)))

        a_al = mult[:K] * d_cap
        # free: off its bounds by more than 1e-9 of the phase's share (mirror descent leaves coordinates that belong on
        # a bound at tiny positive values: they would bias the estimate; in the residual they count either way)
        tf = 1e-9 * (jnp.ones((P, 1), z.dtype) if shares is None else shares[:, None])
        free = (zz > L + tf) & (zz < U - tf)
        act = active[:K]
        pick = free & ~act[None, :]
        nu_ls = jnp.nanmedian(jnp.where(pick, G, jnp.nan), axis=1)
        nu_fb = jnp.nanmedian(jnp.where(free, G + a_al[None, :], jnp.nan), axis=1)
        nu = jnp.where(jnp.isfinite(nu_ls), nu_ls, jnp.where(jnp.isfinite(nu_fb), nu_fb, 0.0))
        nf = jnp.sum(free, axis=0).astype(G.dtype)
        gap = jnp.sum(jnp.where(free, nu[:, None] - G, 0.0), axis=0) / jnp.maximum(nf, 1)
        a_ls = jnp.where(act, jnp.where(nf > 0, jnp.maximum(gap, 0.0), a_al), 0.0)
        r = jnp.minimum(res(a_al), res(a_ls))
        return jnp.where(jnp.isfinite(r), r, jnp.inf), jnp.maximum(1.0, jnp.abs(J + sh.lam * kl))

    return jax.vmap(one)(z, law, center, mu, rho)


def _run_constrained(laws, z0, centers, sh: _Shared, prob: PhaseProblem, config: MixtureConfig, dtype):
    """Augmented Lagrangian over the coupled constraints (caps, KL bound, trust region), the inner problems on the
    product of per-phase capped simplices by :class:`SimplexDescent`, warm-started; every member (law, start,
    trust-region centre) of the batch carries its own multipliers. Returns numpy arrays and the multipliers."""
    B = z0.shape[0]
    G = (prob.index.shape[1] if sh.use_caps else 0) + int(sh.use_max_kl)
    lo, hi = jnp.asarray(prob.lower, dtype), jnp.asarray(prob.upper, dtype)
    shares = jnp.asarray(prob.shares, dtype) if prob.n_phases > 1 else None
    if shares is None:
        lo, hi = lo[0], hi[0]
    mu = np.zeros((B, G))
    gscale = np.asarray(sh.gscale, np.float64)
    rho = np.full(B, _RHO0)
    z = z0
    prev = np.full(B, np.inf)  # largest violation of the previous round
    prev_val = np.full(B, np.inf)
    coupled = prob.coupled and not (prob.caps is None and prob.max_kl is None)  # the trust region is in the projection
    outer = _OUTER_STEPS if coupled else 1
    steps = min(config.steps, _INNER_STEPS) if coupled else config.steps
    final, fin = None, np.zeros(B, bool)  # each member's record from the round it finished (certified or stalled)
    flat_rounds = np.zeros(B, int)
    for _ in range(outer):
        members = (laws, centers, jnp.asarray(mu, dtype), jnp.asarray(rho, dtype))
        res = _solve_phase(z, members, sh, lo, hi, shares, config, jnp.asarray(steps, jnp.int32))
        out = {f.name: np.asarray(getattr(res, f.name)) for f in dataclasses.fields(res)}
        out["viol"] = np.max(np.maximum(out["g"], 0.0), axis=1, initial=0.0)
        if not coupled:
            break
        viol = out["viol"].astype(np.float64)
        cert, scale = (np.asarray(x) for x in _certificate(res.z, members, sh, lo, hi, shares))
        bad = out["status"] == int(Status.nonfinite)
        certified = ~bad & (viol <= CONSTRAINT_TOL) & (cert <= _KKT_TOL * scale)
        # the honest status: converged only with the KKT certificate, else max_steps (nonfinite kept)
        out["status"] = np.where(bad, int(Status.nonfinite), np.where(certified, int(Status.converged), int(Status.max_steps)))
        out["kkt"] = cert
        g = out["g"].astype(np.float64) * gscale
        new_mu = np.maximum(0.0, mu + rho[:, None] * g)
        dual = np.max(np.abs(new_mu - mu), axis=1, initial=0.0) / np.maximum(1.0, np.max(new_mu, axis=1, initial=0.0))
        mu = np.where(fin[:, None], mu, new_mu)
        val = out["J"] + prob.kl_penalty * out["kl"]
        change, size = np.abs(val - prev_val), np.maximum(1.0, np.abs(val))
        flat_rounds = np.where((change <= 1e-10 * size) & (viol <= CONSTRAINT_TOL) & (rho >= _RHO_MAX), flat_rounds + 1, 0)
        settled = (viol <= 0.1 * CONSTRAINT_TOL) & ((dual <= 1e-6) | (change <= 1e-9 * size))
        prev_val = val
        # stops when certified; or settled (violation under CONSTRAINT_TOL / 10 and multipliers or penalized value
        # settled); or stalled (feasible, rho at its ceiling, the penalized value unchanged for 3 rounds): the status
        # of the last two is max_steps unless the certificate holds
        done = bad | certified | settled | (flat_rounds >= 3)
        grow = (viol > _RHO_NEED * prev) & (viol > 0.1 * CONSTRAINT_TOL) & ~fin
        rho = np.where(grow, np.minimum(rho * _RHO_GROW, _RHO_MAX), rho)
        prev = np.where(fin, prev, viol)
        newly = done & ~fin
        final = {k: v.copy() for k, v in out.items()} if final is None else final
        for k, v in out.items():
            final[k][newly] = v[newly]
        fin |= done
        z = jnp.where(jnp.asarray(fin)[:, None], jnp.asarray(final["z"], dtype), res.z)
        if fin.all():
            break
    if coupled:
        for k, v in out.items():  # members that never finished: their last round
            final[k][~fin] = v[~fin]
        out = final
    return out, mu


def _centre_starts(prob: PhaseProblem, n: int, seed: int, dtype, init=None) -> np.ndarray:
    """Start mixtures in blocks: the KL projection of the uniform mixture per phase, then Dirichlet(1) draws."""
    if n < 1:
        raise ValueError(f"starts must be >= 1, got {n}")
    P, K = prob.lower.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n, P * K))
    for p in range(P):
        draws = rng.dirichlet(np.ones(K), size=n)
        draws[0] = 1.0 / K
        draws = 0.98 * draws + 0.02 / K
        w = project_kl_batch(jnp.log(jnp.asarray(draws, dtype)), jnp.asarray(prob.lower[p], dtype), jnp.asarray(prob.upper[p], dtype))
        out[:, p * K : (p + 1) * K] = np.asarray(w) * prob.shares[p]
    if init is not None:
        z = prob.blocks(np.asarray(init, np.float64).reshape(-1))
        for p in range(P):
            w = project_batch(jnp.asarray(z[None, p * K : (p + 1) * K] / prob.shares[p], dtype), jnp.asarray(prob.lower[p], dtype),
                               jnp.asarray(prob.upper[p], dtype))
            out[0, p * K : (p + 1) * K] = np.asarray(w[0]) * prob.shares[p]
    return out


def _toward(prob: PhaseProblem, centre: np.ndarray, target: np.ndarray, r: float, dtype) -> np.ndarray:
    """A start inside the trust region of ``centre``: the point 0.9 r from it towards ``target`` (in total variation),
    projected onto the per-phase bounds."""
    d = 0.5 * np.abs(target - centre).sum()
    t = 1.0 if d <= 0.9 * r else 0.9 * r / d
    z = centre + t * (target - centre)
    P, K = prob.lower.shape
    out = np.empty_like(z)
    for p in range(P):
        blk = slice(p * K, (p + 1) * K)
        w = project_batch(jnp.asarray(z[None, blk] / prob.shares[p], dtype), jnp.asarray(prob.lower[p], dtype), jnp.asarray(prob.upper[p], dtype))
        out[blk] = np.asarray(w[0]) * prob.shares[p]
    return out


def _shared(prob: PhaseProblem, N, D, w, fn, dtype, trust: bool) -> _Shared:
    P, K = prob.lower.shape
    if prob.prior is not None:
        with np.errstate(divide="ignore"):
            lsq = np.log(prob.shares[:, None] * prob.prior[None, :]).reshape(-1)
        lsq = np.where(np.isfinite(lsq), lsq, 0.0)
    else:
        lsq = np.zeros(P * K)
    a = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return _Shared(N=a(N), D=a(D), w=a(w), inv=jnp.asarray(np.argsort(prob.index.reshape(-1))), log_sq=a(lsq),
                   lam=a(prob.kl_penalty), caps=a(prob.caps if prob.caps is not None else np.full(K, _UNUSED)),
                   max_kl=a(_UNUSED if prob.max_kl is None else prob.max_kl), radius=a(prob.trust_radius or 0.0),
                   gscale=a(_constraint_scale(prob)), objective=fn,
                   P=P, use_kl=True, use_caps=True, use_max_kl=True, use_trust=trust)


def _constraint_scale(prob: PhaseProblem) -> np.ndarray:
    """Scale of each constraint inside the augmented Lagrangian: sqrt(cap_k) for the relative cap
    ``epochs_k / E_k - 1`` (so the penalty's curvature, rho / cap_k in the mixture coordinates, is rho in the metric of
    the entropic mirror step, whose local metric is diag(1 / z) with z ~ cap_k on a binding cap: every cap equally
    stiff, however small its domain), 1 for the KL bound. The same feasible set; violations are reported unscaled."""
    K = prob.lower.shape[1]
    caps = prob.caps if prob.caps is not None else np.ones(K)
    return np.concatenate([np.sqrt(np.clip(caps, 1e-300, 1.0)), [1.0]])


def _feasible(out, tol: float = CONSTRAINT_TOL) -> np.ndarray:
    return (out["status"] != int(Status.nonfinite)) & (out["viol"] <= tol) & np.isfinite(out["J"])


def _penalized(out, prob: PhaseProblem) -> np.ndarray:
    return out["J"] + (prob.kl_penalty * out["kl"] if prob.kl_penalty > 0 else 0.0)


def tile_law(law, n: int):
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape) if eqx.is_array(x) else x, law)


def solve_constrained(laws, R: int, prob: PhaseProblem, H_blocks, N, D, w, fn, cfg, starts, seed, dtype, init=None):
    """Best feasible optimum of each of R member laws (batched, leading axis R): stage 1 from ``starts`` start
    mixtures without the trust region; stage 2, for members whose optimum lies farther than the radius from every
    measured mixture, within the ball of each of the ``trust_candidates`` measured mixtures nearest that optimum.
    Returns (out (R, ...), feasible (R,), trust stage used (R,))."""
    S = starts
    z0 = _centre_starts(prob, S, seed, dtype, init)
    B = R * S
    members = jax.tree_util.tree_map(lambda x: jnp.repeat(x, S, axis=0) if eqx.is_array(x) else x, laws)
    zeros = jnp.zeros((B, z0.shape[1]), dtype)
    sh = _shared(prob, N, D, w, fn, dtype, trust=False)
    out, _ = _run_constrained(members, jnp.asarray(np.tile(z0, (R, 1)), dtype), zeros, sh, prob, cfg, dtype)
    out = {k: v.reshape((R, S) + v.shape[1:]) for k, v in out.items() if k != "g"}
    feas = _feasible(out)
    val = np.where(feas, _penalized(out, prob), np.inf)
    best = np.argmin(val, axis=1)
    take = lambda o, i: {k: np.take_along_axis(a, i.reshape((R, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0] for k, a in o.items()}  # noqa: E731
    res = take(out, best)
    res["start_values"] = np.where(feas, _penalized(out, prob), np.nan)
    res["start_status"] = out["status"]
    res["start_z"] = out["z"]
    res["start_steps"] = out["num_steps"]
    res["start_kkt"] = out["kkt"]
    ok = np.isfinite(val[np.arange(R), best])
    used_trust = np.zeros(R, bool)
    r = prob.trust_radius
    if r is None:
        return res, ok, used_trust
    dist = 0.5 * np.abs(res["z"][:, None, :] - H_blocks[None]).sum(-1)  # (R, m)
    need = dist.min(axis=1) > r
    if not need.any():
        return res, ok, used_trust
    nb = min(TRUST_CANDIDATES, H_blocks.shape[0])
    near = np.argsort(dist, axis=1)[:, :nb]  # (R, nb)
    centres = H_blocks[near]  # (R, nb, n)
    z0 = np.stack([[_toward(prob, centres[i, j], res["z"][i], r, dtype) for j in range(nb)] for i in range(R)])
    members = jax.tree_util.tree_map(lambda x: jnp.repeat(x, nb, axis=0) if eqx.is_array(x) else x, laws)
    sh = _shared(prob, N, D, w, fn, dtype, trust=True)
    out2, _ = _run_constrained(members, jnp.asarray(z0.reshape(R * nb, -1), dtype), jnp.asarray(centres.reshape(R * nb, -1), dtype),
                               sh, prob, cfg, dtype)
    out2 = {k: v.reshape((R, nb) + v.shape[1:]) for k, v in out2.items() if k != "g"}
    # feasibility checked on the exact distance to the centre
    out2["viol"] = np.maximum(out2["viol"], 0.5 * np.abs(out2["z"] - centres).sum(-1) - r)
    feas2 = _feasible(out2)
    val2 = np.where(feas2, _penalized(out2, prob), np.inf)
    best2 = np.argmin(val2, axis=1)
    res2 = take(out2, best2)
    res2["start_values"] = val2
    ok2 = np.isfinite(val2[np.arange(R), best2])
    for k in res:
        if k.startswith("start_"):
            continue
        res[k] = np.where(need.reshape((R,) + (1,) * (res[k].ndim - 1)), res2[k], res[k])
    res["trust_values"] = val2
    res["trust_centres"] = near
    ok = np.where(need, ok2, ok)
    return res, ok, need
