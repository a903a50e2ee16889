"""The feasible set of a constrained mixture search: a simplex per training phase, repetition caps, KL, trust region.

A swarm table stores a P-phase mixture flattened, ``h[k@p] = s_p w_pk`` with fixed phase shares s_p and per-phase
mixtures w_p on the simplex. The feasible set (:class:`PhaseProblem`, built and checked by :func:`phase_problem`) is
a product of per-phase capped simplices (floors and ceilings bound w_pk), intersected with

* repetition caps, ``D sum_p s_p w_pk <= E_k U_k`` (D the target tokens, U_k the unique tokens of domain k, E_k the
  most epochs): they couple the phases (one phase: they are ceilings);
* a KL bound ``sum_p s_p KL(w_p || q) <= B`` to a prior mixture q (by default the natural distribution, the unique
  tokens normalized); a KL penalty ``lambda sum_p s_p KL(w_p || q)`` is added to the objective instead or as well
  (a domain with q_k = 0 is then held at 0);
* a trust region, ``TV(h, m) = 0.5 ||h - m||_1 <= r`` for some measured mixture m (TV over the flattened mixture
  equals ``sum_p s_p TV(w_p, m_p)``).

Also where the phases of a fit or a table are recorded, and :func:`check_single_phase` for the callers that handle
one phase only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .bounds import InfeasibleMixtureError, per_domain_vector

__all__ = ["PhaseProblem", "phase_problem", "PhasedMixtureError", "check_single_phase"]


@dataclasses.dataclass(frozen=True)
class PhaseProblem:
    """The feasible set and penalties of a constrained mixture search, with the mixture in blocks by phase.

    ``phases`` (P), ``shares`` s (P,), ``base_domains`` (K), ``index`` (P, K): the column of the law's flattened
    mixture holding (phase p, domain k). ``lower`` / ``upper`` (P, K): bounds on the per-phase weights w_p.
    ``caps`` (K,) or None: repetition caps on the token fraction of each domain, ``sum_p s_p w_pk <= caps_k`` with
    ``caps_k = max_epochs_k U_k / tokens`` (folded into ``upper`` when P = 1). ``prior`` (K,) or None, ``kl_penalty``
    lambda >= 0, ``max_kl`` B or None, ``trust_radius`` r or None: see :func:`optimize_mixture`."""

    phases: tuple[str, ...]
    shares: np.ndarray
    base_domains: tuple[str, ...]
    index: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    caps: np.ndarray | None
    unique_tokens: np.ndarray | None
    max_epochs: np.ndarray | None
    tokens: float | None
    prior: np.ndarray | None
    kl_penalty: float
    max_kl: float | None
    trust_radius: float | None

    @property
    def n_phases(self) -> int:
        return len(self.phases)

    @property
    def coupled(self) -> bool:
        """Whether constraints beyond the per-phase simplices remain (solved with an augmented Lagrangian)."""
        return self.caps is not None or self.max_kl is not None or self.trust_radius is not None

    def flat(self, z) -> np.ndarray:
        """The law's flattened mixture h from the phase-major blocks z (P * K,) (or (..., P * K))."""
        z = np.asarray(z)
        out = np.empty_like(z)
        out[..., self.index.reshape(-1)] = z
        return out

    def blocks(self, h) -> np.ndarray:
        """Phase-major blocks z (..., P * K) from the law's flattened mixture h."""
        return np.asarray(h)[..., self.index.reshape(-1)]

    def epochs(self, z) -> np.ndarray | None:
        """Epochs over each domain's unique tokens at the target tokens: tokens * sum_p s_p w_pk / U_k."""
        if self.unique_tokens is None:
            return None
        frac = np.asarray(z).reshape(np.shape(z)[:-1] + self.lower.shape).sum(-2)
        return self.tokens * frac / self.unique_tokens

    def kl(self, z) -> np.ndarray | None:
        """sum_p s_p KL(w_p || prior) (nats), or None without a prior."""
        if self.prior is None:
            return None
        z = np.asarray(z, np.float64)
        sq = (self.shares[:, None] * self.prior[None, :]).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(z > 0, z * np.log(np.where(z > 0, z, 1.0) / np.where(sq > 0, sq, 1.0)), 0.0)
        return t.sum(-1)


def _phase_layout(domains: Sequence[str], phases, phase_shares):
    """(phases, shares, base domains, (P, K) index) of a flattened mixture over ``domain@phase`` names."""
    names = list(domains)
    if phases is None and phase_shares is not None and len(np.atleast_1d(phase_shares)) > 1:
        seen = []
        for d in names:
            if "@" not in d:
                raise ValueError(f"phase_shares given but domain {d!r} has no '@phase' suffix; phased mixtures name their "
                                 "columns domain@phase")
            ph = d.rsplit("@", 1)[1]
            if ph not in seen:
                seen.append(ph)
        phases = seen
    if phases is None or len(phases) <= 1:
        return ("all",), np.ones(1), tuple(names), np.arange(len(names))[None, :]
    phases = tuple(str(p) for p in phases)
    if phase_shares is None:
        raise ValueError(f"the mixture spans {len(phases)} training phases ({', '.join(phases)}) but no phase shares are "
                         "known: pass phase_shares= (each phase's share of the training tokens)")
    s = np.asarray(phase_shares, np.float64).reshape(-1)
    if s.shape != (len(phases),) or not np.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"phase_shares must be {len(phases)} finite numbers > 0 (one per phase), got {s.tolist()}")
    if abs(s.sum() - 1) > 1e-6:
        raise ValueError(f"phase_shares sum to {s.sum():.8g}; expected 1 (each phase's share of the training tokens)")
    suffix = "@" + phases[0]
    base = [d[: -len(suffix)] for d in names if d.endswith(suffix)]
    col = {d: j for j, d in enumerate(names)}
    try:
        idx = np.array([[col[f"{d}@{p}"] for d in base] for p in phases], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"no mixture column {e.args[0]!r}: every domain needs one column per phase (domain@phase)") from None
    if idx.size != len(names):
        raise ValueError(f"{len(names)} mixture columns do not split into {len(phases)} phases of {len(base)} domains")
    return phases, s, tuple(base), idx


def _per_phase(value, phases, base, label: str, default: float) -> np.ndarray:
    """(P, K) per-phase values from None, a number, K or (P, K) numbers, or ``{domain or domain@phase: value}``."""
    P, K = len(phases), len(base)
    out = np.full((P, K), float(default))
    if value is None:
        return out
    if isinstance(value, Mapping):
        for key, v in value.items():
            if key in base:
                out[:, base.index(key)] = float(v)
            elif "@" in str(key) and str(key).rsplit("@", 1)[0] in base and str(key).rsplit("@", 1)[1] in phases:
                d, p = str(key).rsplit("@", 1)
                out[phases.index(p), base.index(d)] = float(v)
            else:
                raise ValueError(f"{label}: unknown domain {key!r}; domains are {list(base)}" + ("" if P == 1 else f" (or domain@phase, phases {list(phases)})"))
        return out
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        out[:] = float(arr)
    elif arr.shape == (K,):
        out[:] = arr[None, :]
    elif arr.shape == (P, K):
        out = arr.copy()
    else:
        raise ValueError(f"{label} has shape {arr.shape}; expected a number, {K} values" + ("" if P == 1 else f", ({P}, {K}) values")
                         + " or a {domain: value} mapping")
    if np.isnan(out).any():
        raise ValueError(f"{label} contains NaN")
    return out


def _prior(prior, base, natural) -> np.ndarray:
    """The prior mixture (K,) over the base domains, checked: every domain present, >= 0, summing to 1."""
    K = len(base)
    if isinstance(prior, str):
        if prior != "natural":
            raise ValueError(f"prior must be 'natural', a {{domain: weight}} mapping or {K} weights, got {prior!r}")
        prior = None
    if prior is None:
        if natural is None:
            raise ValueError("a KL penalty or bound needs a prior mixture: pass prior={domain: weight} (the natural "
                             "distribution is used by default when the unique tokens per domain are known)")
        q = np.asarray(natural, np.float64) / np.sum(natural)
        return q
    if isinstance(prior, Mapping):
        unknown = [k for k in prior if k not in base]
        if unknown:
            raise ValueError(f"prior: unknown domain(s) {unknown}; domains are {list(base)}")
        missing = [d for d in base if d not in prior]
        if missing:
            raise ValueError(f"prior misses {len(missing)} domain(s): {missing}; give a weight (possibly 0) for every domain")
        q = np.array([float(prior[d]) for d in base])
    else:
        q = np.asarray(prior, np.float64).reshape(-1)
        if q.shape != (K,):
            raise ValueError(f"prior has {q.size} weights; expected {K} (one per domain) or a {{domain: weight}} mapping")
    if not np.isfinite(q).all() or (q < 0).any():
        i = int(np.flatnonzero(~np.isfinite(q) | (q < 0))[0])
        raise ValueError(f"prior weight of domain {base[i]!r} is {q[i]!r}; expected a finite number >= 0")
    if abs(q.sum() - 1) > 1e-6:
        raise ValueError(f"prior weights sum to {q.sum():.8g}; expected 1 (within 1e-6)")
    return q


def phase_problem(
    domains: Sequence[str],
    *,
    phases=None,
    phase_shares=None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    n_tokens: float | None = None,
    prior=None,
    kl_penalty: float | None = None,
    max_kl: float | None = None,
    trust_radius: float | None = None,
    min_weight: float = 0.0,
    natural=None,
) -> PhaseProblem:
    """The checked feasible set of a constrained mixture search (:class:`PhaseProblem`), without a law.

    ``domains``: the law's flattened mixture columns (``domain@phase`` when phased); ``phases`` / ``phase_shares``
    describe the phases (one phase when both are None). Floors and ceilings bound the per-phase weights w_p (a
    number, K numbers, (P, K) numbers, or ``{domain: v}`` / ``{domain@phase: v}``). ``unique_tokens`` U (K numbers
    or ``{domain: U}``, in the units of ``n_tokens``) with ``max_epochs`` E (default 1): repetition caps
    ``n_tokens * sum_p s_p w_pk <= E_k U_k``. ``natural``: the natural distribution (K,) used when a KL term asks
    for a prior and none is given. ``min_weight``: the law's implicit floor on every flattened weight. Raises
    :class:`InfeasibleMixtureError` naming the domains when the bounds or caps admit no mixture."""
    phases, s, base, idx = _phase_layout(domains, phases, phase_shares)
    P, K = idx.shape
    lo = _per_phase(floors, phases, base, "floors", 0.0)
    hi = np.minimum(_per_phase(ceilings, phases, base, "ceilings", 1.0), 1.0)
    for arr, label in ((lo, "floor"), (hi, "ceiling")):
        if (arr < 0).any():
            p, k = np.argwhere(arr < 0)[0]
            raise ValueError(f"{label} of domain {base[k]!r}{'' if P == 1 else ' in ' + phases[p]} is {arr[p, k]!r}; weights are >= 0")
    if min_weight > 0:
        lo = np.maximum(lo, min_weight / s[:, None])
    caps = U = E = tokens = None
    if unique_tokens is not None:
        if n_tokens is None or not (math.isfinite(n_tokens) and n_tokens > 0):
            raise ValueError(f"unique_tokens needs the target token count n_tokens > 0, got {n_tokens!r}")
        U = per_domain_vector(unique_tokens, K, base, "unique_tokens", np.inf)
        if (U <= 0).any():
            i = int(np.flatnonzero(U <= 0)[0])
            raise ValueError(f"unique_tokens of domain {base[i]!r} is {U[i]!r}; expected > 0")
        E = per_domain_vector(max_epochs, K, base, "max_epochs", 1.0)
        if (E <= 0).any():
            raise ValueError(f"max_epochs must be > 0, got {max_epochs!r}")
        tokens = float(n_tokens)
        caps = np.minimum(E * U / tokens, 1.0)
        hi = np.minimum(hi, caps[None, :] / s[:, None])  # implied by the cap: s_p w_pk <= caps_k
    elif max_epochs is not None:
        raise ValueError("max_epochs needs unique_tokens (the unique tokens available per domain)")
    q = None
    lam = 0.0 if kl_penalty is None else float(kl_penalty)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"kl_penalty must be a finite number >= 0, got {kl_penalty!r}")
    if max_kl is not None and not (math.isfinite(float(max_kl)) and float(max_kl) > 0):
        raise ValueError(f"max_kl must be a finite number > 0 (nats), got {max_kl!r}")
    if trust_radius is not None and not (math.isfinite(float(trust_radius)) and 0 < float(trust_radius) <= 1):
        raise ValueError(f"trust_radius must lie in (0, 1] (a total-variation distance), got {trust_radius!r}")
    if lam > 0 or max_kl is not None or (prior is not None and not isinstance(prior, str)):
        if natural is None and U is not None and np.isfinite(U).all():
            natural = U
        q = _prior(prior, base, natural)
        hi = np.where(q[None, :] > 0, hi, 0.0)  # KL(w || q) is finite only with w = 0 where q = 0
    names = [[base[k] if P == 1 else f"{base[k]}@{phases[p]}" for k in range(K)] for p in range(P)]
    bad = np.argwhere(lo > hi * (1 + 1e-12) + 1e-15)
    if bad.size:
        why = lambda p, k: (" from the repetition cap" if caps is not None and hi[p, k] >= caps[k] / s[p] - 1e-15 else  # noqa: E731
                            " (prior weight 0)" if q is not None and q[k] == 0 else "")
        raise InfeasibleMixtureError("floor above ceiling for domain(s): " + ", ".join(
            f"{names[p][k]} (floor {lo[p, k]:.6g} > ceiling {hi[p, k]:.6g}{why(p, k)})" for p, k in bad))
    if caps is not None and P > 1:  # before the per-phase sums: the caps also lower the ceilings
        need = (s[:, None] * lo).sum(0)
        over = np.flatnonzero(need > caps * (1 + 1e-12) + 1e-15)
        if over.size:
            raise InfeasibleMixtureError("repetition caps below the floors for domain(s): " + ", ".join(
                f"{base[k]} (floors take {need[k] * tokens / U[k]:.4g} epochs > max_epochs {E[k]:g})" for k in over))
        room = np.minimum(caps, (s[:, None] * hi).sum(0))
        if room.sum() < 1 - 1e-12:
            order = np.argsort(room)[: min(K, 8)]
            raise InfeasibleMixtureError(
                f"the repetition caps admit at most {room.sum():.4g} of the tokens (need 1): max_epochs x unique tokens is "
                f"too small at {tokens:.4g} tokens; tightest domains: " + ", ".join(
                    f"{base[k]} (at most {room[k]:.3g} of the tokens)" for k in order))
    hi = np.maximum(hi, lo)
    for p in range(P):
        where = "" if P == 1 else f" in {phases[p]}"
        if lo[p].sum() > 1 + 1e-12:
            raise InfeasibleMixtureError(f"floors{where} sum to {lo[p].sum():.6g} > 1: " + ", ".join(
                f"{base[k]}={lo[p, k]:.4g}" for k in np.flatnonzero(lo[p] > 0)))
        if hi[p].sum() < 1 - 1e-12:
            raise InfeasibleMixtureError(f"ceilings{where} sum to {hi[p].sum():.6g} < 1, no mixture fits: " + ", ".join(
                f"{base[k]}={hi[p, k]:.4g}" for k in range(K)))
    if P == 1:
        caps = None  # folded into the ceilings
    return PhaseProblem(phases=tuple(phases), shares=s, base_domains=tuple(base), index=idx, lower=lo, upper=hi, caps=caps,
                        unique_tokens=U, max_epochs=E, tokens=tokens, prior=q, kl_penalty=lam,
                        max_kl=None if max_kl is None else float(max_kl),
                        trust_radius=None if trust_radius is None else float(trust_radius))


def phases_of(*sources):
    """(phases, shares) recorded by a fit, a bootstrap result or a table among ``sources``, or (None, None)."""
    for src in sources:
        if src is None:
            continue
        infos = (getattr(src, "info", None), getattr(getattr(src, "point", None), "info", None), getattr(getattr(src, "data", None), "__dict__", None))
        for i in infos:
            if isinstance(i, dict) and i.get("phases") is not None and len(i["phases"]) > 1:
                return tuple(i["phases"]), i.get("phase_shares")
        ph = getattr(src, "phases", None)
        if ph is not None and len(ph) > 1:
            return tuple(ph), getattr(src, "phase_shares", None)
    return None, None


def unique_tokens_of(*sources):
    """Raw unique-token counts (K,) carried by a table among ``sources`` (or its ``.data``), or None."""
    for src in sources:
        for obj in (src, getattr(src, "data", None)):
            U = getattr(obj, "unique_tokens", None)
            if U is not None and hasattr(obj, "mixtures"):
                return np.asarray(U, np.float64)
    return None


class PhasedMixtureError(ValueError):
    """A computation that handles one training phase only was given a table or law with several (a mixture over
    (phase, domain) pairs whose per-phase sums are fixed): today, the continuous optimum of
    :func:`mixjax.calibrate_optimum` (its candidate pools work on phased fits)."""


def check_single_phase(*sources, what: str = "this computation") -> None:
    """Raise :class:`PhasedMixtureError` when a fit, a bootstrap result or a table among ``sources`` has more than one
    training phase (recorded as ``info["phases"]`` or ``.phases``); ``what`` names the computation in the message."""
    for src in sources:
        infos = (getattr(src, "info", None), getattr(getattr(src, "point", None), "info", None))
        phases = [i.get("phases") for i in infos if isinstance(i, dict)] + [getattr(src, "phases", None)]
        for ph in phases:
            if ph is not None and len(ph) > 1:
                raise PhasedMixtureError(
                    f"the mixtures here span {len(ph)} training phases ({', '.join(map(str, ph))}); {what} handles one "
                    "phase only (fit, compare, optimize_mixture and suggest work on phased tables)"
                )
