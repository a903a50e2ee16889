"""Exposure laws for swarm tables: per-domain effective exposure over training phases, power returns, and a
discount for data repeated beyond a domain's unique tokens.

A phased mixture is stored flattened, ``h[domain@phase_p] = s_p w_p[domain]`` (docs/swarms.md). These laws read
the phase structure and the unique tokens of the table they are fitted to from the class: the registered classes
(``exposure``, ``exposure_joint``) treat every mixture column as one domain of one phase and have no repetition
term; ``ExposureLaw.for_data(data)`` (the law interface's hook, :meth:`mixjax.laws.AbstractLaw.for_data`) returns
the class bound to a table's phases, phase shares, base domains and unique tokens. :func:`mixjax.fit`,
:func:`mixjax.bootstrap`, :func:`mixjax.compare` and the command line call the hook, so a law given by name or by
its registered class is bound to the table it is fitted to. A bound class describes its binding (``binding()``,
saved with a fit) and is rebuilt from it (``from_binding``), so a saved fit reloads the same bound class.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..data import phase_domain_name
from ._base import AbstractLaw, DataSummary

__all__ = ["ExposureLaw", "JointExposureLaw", "bind_to_data"]


def _power(x, alpha):
    """``x ** alpha`` for ``x >= 0``, 0 at ``x = 0`` with finite gradients in x and alpha."""
    pos = x > 0
    xs = jnp.where(pos, x, 1.0)
    return jnp.where(pos, jnp.exp(alpha * jnp.log(xs)), 0.0)


def repetition_discount(epochs, r_star):
    """Value per token of data seen ``epochs`` times, relative to fresh data: 1 up to one epoch, then
    ``(1 + R* (1 - exp(-(e - 1) / R*))) / e`` (Muennighoff et al. 2023: the R = e - 1 repetitions are worth
    ``R* (1 - exp(-R / R*))`` fresh epochs). Continuous with its first derivative at e = 1."""
    over = epochs > 1.0
    e = jnp.where(over, epochs, 2.0)
    value = 1.0 + r_star * (1.0 - jnp.exp(-(e - 1.0) / r_star))
    return jnp.where(over, value / e, 1.0)


class _PhasedExposure(AbstractLaw):
    """Shared machinery: the phase layout and unique tokens of the table (class attributes set by
    :meth:`for_data`), the effective exposures and the repetition discount."""

    #: Number of training phases P of the bound table (1: every column is a domain).
    n_phases: ClassVar[int] = 1
    #: ``(P, K)`` column of ``domain k @ phase p`` in the mixture, as nested tuples; None: columns in order.
    phase_columns: ClassVar[tuple | None] = None
    #: Unique tokens per base domain, in billions of tokens; None: no repetition term.
    unique_tokens_b: ClassVar[tuple | None] = None
    #: The table's base domains (for messages and checks), when bound.
    base_domains: ClassVar[tuple | None] = None
    #: The bound table's phase names and token shares (None: a table of one phase, or a binding without names).
    phases: ClassVar[tuple | None] = None
    phase_shares: ClassVar[tuple | None] = None
    #: The registered class this one is bound from; None: this class is not bound.
    unbound: ClassVar[type | None] = None
    per_domain: ClassVar[bool] = False
    uses_tokens: ClassVar[bool] = False

    @classmethod
    def for_data(cls, data) -> type:
        """This law bound to ``data``'s phases (``data.phase_weights()`` layout), phase shares, base domains and
        unique tokens (``data.unique_tokens``; without them the law has no repetition term). Bound classes are
        cached by binding, so fits on tables of one layout compile once. On a class that is already bound: that
        class, used as is, when ``data`` agrees with its binding (:meth:`layout_mismatch`), else a ValueError."""
        if cls.unbound is not None:
            problem = cls.layout_mismatch(data)
            if problem:
                raise ValueError(f"law {cls.name} is bound to {cls.describe_binding()}, but {data.name!r} {problem}")
            return cls
        _, shares, base, idx = data.phase_index()
        U = None
        if data.unique_tokens is not None:
            U = tuple(float(u) / 1e9 for u in np.asarray(data.unique_tokens, dtype=np.float64))
        phased = data.phases is not None
        return bind_to_data(cls, tuple(tuple(int(j) for j in row) for row in np.asarray(idx)), U, tuple(base),
                            phases=tuple(data.phases) if phased else None,
                            phase_shares=tuple(float(x) for x in np.asarray(shares, np.float64)) if phased else None)

    @classmethod
    def describe_binding(cls) -> str:
        """The binding in words: phases and shares, domains, unique tokens."""
        if cls.unbound is None:
            return "no table (every mixture column one domain of one phase, no repetition term)"
        P, K = cls.n_phases, len(cls.phase_columns[0])
        if cls.phases is not None:
            shares = "" if cls.phase_shares is None else " with shares " + "/".join(f"{x:.6g}" for x in cls.phase_shares)
            where = f"{P} phase(s) ({', '.join(cls.phases)}{shares}) x {K} domains"
        else:
            where = f"{P} phase(s) x {K} domains" if P > 1 else f"one phase of {K} domains"
        return where + (", with unique tokens" if cls.unique_tokens_b is not None else ", without unique tokens")

    @classmethod
    def expected_names(cls) -> list | None:
        """``[(column, name)]``: the flattened domain name the binding expects in each mixture column (None when the
        binding holds no names)."""
        if cls.base_domains is None:
            return None
        out = []
        for p, row in enumerate(cls.phase_columns):
            for k, j in enumerate(row):
                d = cls.base_domains[k]
                out.append((j, d if cls.phases is None else phase_domain_name(d, cls.phases[p])))
        return out

    @classmethod
    def layout_mismatch(cls, data, require_phases: bool = False) -> str | None:
        """How ``data`` contradicts this class's binding (a phrase completing "<table> ..."), or None when it agrees.

        Checked: the number of mixture columns; the domain name in each column; the training phases and their
        shares when the table records phases (with ``require_phases``, a table without phase metadata is refused
        when the binding has several phases); the unique tokens when both the table and the binding have them (a
        table without unique tokens is predicted with the binding's)."""
        if cls.unbound is None:
            return None
        P, K = cls.n_phases, len(cls.phase_columns[0])
        names = cls.expected_names()
        if names is not None:
            if cls.phases is None and data.phases is not None:
                return f"has {len(data.phases)} training phases ({', '.join(data.phases)}), the binding one"
            if cls.phases is not None and data.phases is None and require_phases and P > 1:
                return ("records no training phases (a table whose columns are not phase_<p>_<domain> ones); give a phase "
                        "table of the same phases, or a bundled swarm")
            if cls.phases is not None and data.phases is not None:
                if tuple(data.phases) != cls.phases:
                    return f"has phases {list(data.phases)}, not {list(cls.phases)}"
                shares = np.asarray(data.phase_shares, np.float64)
                if cls.phase_shares is not None and not np.allclose(shares, cls.phase_shares, rtol=1e-9, atol=1e-12):
                    return (f"has phase shares {[float(x) for x in shares]}, not {list(cls.phase_shares)} (the shares the law "
                            "was fitted with)")
        if data.n_domains != P * K:
            return f"has {data.n_domains} mixture columns, not {P} x {K}"
        if names is None:  # a binding without names: compare the layout by position
            if data.phases is not None:
                _, _, _, idx = data.phase_index()
                if tuple(tuple(int(j) for j in row) for row in np.asarray(idx)) != cls.phase_columns:
                    return f"has another phase layout ({len(data.phases)} phases of {len(data.base_domains or ())} domains)"
        else:
            wrong = [(j, want, data.domains[j]) for j, want in names if data.domains[j] != want]
            if wrong:
                j, want, got = wrong[0]
                if set(data.domains) == {n for _, n in names}:
                    return (f"holds its mixture columns in another order (column {j} is {got!r}, the binding's is {want!r}); "
                            "align it to the fit's domains (data.align)")
                missing = sorted({n for _, n in names} - set(data.domains))
                return f"has other domains (missing: {missing[:5]}; column {j} is {got!r}, the binding's is {want!r})"
        U = cls.unique_tokens_b
        if U is not None and data.unique_tokens is not None:
            got = np.asarray(data.unique_tokens, np.float64) / 1e9
            base = data.base_domains if data.phases is not None else data.domains
            if cls.base_domains is not None and base is not None and set(base) == set(cls.base_domains):
                got = np.array([got[list(base).index(d)] for d in cls.base_domains])
            if got.shape != (len(U),) or not np.allclose(got, U, rtol=1e-9, atol=0.0):
                return ("has other unique tokens per domain than the law was fitted with (its repetition term reads them); "
                        "refit on this table")
        return None

    @classmethod
    def binding(cls) -> dict | None:
        """The binding as JSON-able values (saved with a fit; :meth:`from_binding` rebuilds the class), or None for
        a class that is not bound: phases, phase_shares, base_domains, phase_columns ``(P, K)``, unique_tokens_b."""
        if cls.unbound is None:
            return None
        opt = lambda v, f: None if v is None else [f(x) for x in v]  # noqa: E731
        return {
            "phases": opt(cls.phases, str),
            "phase_shares": opt(cls.phase_shares, float),
            "base_domains": opt(cls.base_domains, str),
            "phase_columns": [[int(j) for j in row] for row in cls.phase_columns],
            "unique_tokens_b": opt(cls.unique_tokens_b, float),
        }

    @classmethod
    def from_binding(cls, binding: dict, domains=None) -> type:
        """The class bound as ``binding`` (from :meth:`binding`) describes, checked (a ValueError naming what is
        wrong); with ``domains`` (the fit's flattened domain names), also checked against them."""
        root = cls.unbound or cls
        keys = {"phases", "phase_shares", "base_domains", "phase_columns", "unique_tokens_b"}
        if not isinstance(binding, dict) or set(binding) != keys:
            raise ValueError(f"a binding of law {root.name} holds exactly {sorted(keys)}, got {binding!r:.200}")
        cols = binding["phase_columns"]
        ok = (isinstance(cols, list) and cols and all(isinstance(r, list) and r for r in cols)
              and len({len(r) for r in cols}) == 1
              and all(isinstance(j, int) and not isinstance(j, bool) for r in cols for j in r))
        if not ok:
            raise ValueError(f"binding of law {root.name}: phase_columns must be a (P, K) list of integer columns, got {cols!r:.200}")
        P, K = len(cols), len(cols[0])
        if sorted(j for r in cols for j in r) != list(range(P * K)):
            raise ValueError(f"binding of law {root.name}: phase_columns must use each of the {P * K} mixture columns once")

        def seq(name, n, kind):
            v = binding[name]
            if v is None:
                return None
            good = isinstance(v, list) and len(v) == n and all(
                isinstance(x, str) if kind is str else (isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        and math.isfinite(x) and x > 0) for x in v)
            if not good:
                what = "names" if kind is str else "finite numbers > 0"
                raise ValueError(f"binding of law {root.name}: {name} must be {n} {what} or null, got {v!r:.200}")
            return tuple(kind(x) for x in v)

        phases, shares = seq("phases", P, str), seq("phase_shares", P, float)
        base, U = seq("base_domains", K, str), seq("unique_tokens_b", K, float)
        if shares is not None and phases is None:
            raise ValueError(f"binding of law {root.name}: phase_shares without phases")
        bound = bind_to_data(root, tuple(tuple(r) for r in cols), U, base, phases=phases, phase_shares=shares)
        if domains is not None:
            domains = list(domains)
            if len(domains) != P * K:
                raise ValueError(f"binding of law {root.name} is {P} phases x {K} domains, but the fit has {len(domains)} domains")
            wrong = [(j, want) for j, want in bound.expected_names() or () if domains[j] != want]
            if wrong:
                raise ValueError(f"binding of law {root.name} puts {wrong[0][1]!r} in column {wrong[0][0]}, where the fit has "
                                 f"{domains[wrong[0][0]]!r}")
        return bound

    @classmethod
    def _layout(cls, summary_domains: int) -> tuple[int, int, bool]:
        """(P, K, repetition term) for a table of ``summary_domains`` mixture columns."""
        P = cls.n_phases
        if cls.phase_columns is not None and P * len(cls.phase_columns[0]) != summary_domains:
            raise ValueError(f"{cls.__name__} is bound to {P} phases x {len(cls.phase_columns[0])} domains, but the "
                             f"data has {summary_domains} mixture columns")
        if summary_domains % P:
            raise ValueError(f"{cls.__name__}: {summary_domains} mixture columns are not {P} phases of equal domains")
        return P, summary_domains // P, cls.unique_tokens_b is not None

    @classmethod
    def _phase_major(cls) -> bool:
        """Whether column ``p K + k`` holds domain k of phase p (the layout of ``load_phase_table``): the (P, K)
        view is then a reshape rather than a gather."""
        if cls.phase_columns is None:
            return True
        flat = np.asarray(cls.phase_columns).reshape(-1)
        return bool(np.array_equal(flat, np.arange(flat.size)))

    def _phase_mixture(self, mixture):
        """``(P, K)`` token fractions ``s_p w_p[k]`` of one run."""
        cls = type(self)
        if cls._phase_major():
            return mixture.reshape(cls.n_phases, -1)
        return mixture[jnp.asarray(np.asarray(cls.phase_columns))]

    def _exposure(self, mixture, n_tokens, log_beta, log_r_star):
        """Effective exposure ``x_k = d(e_k) sum_p beta_p s_p w_pk`` (beta_0 = 1) of one run, with d the repetition
        discount at the run's epochs ``e_k = D sum_p s_p w_pk / U_k`` (d = 1 without unique tokens)."""
        hp = self._phase_mixture(mixture)
        beta = jnp.concatenate([jnp.ones((1,), hp.dtype), jnp.exp(log_beta)])
        x = beta @ hp
        U = type(self).unique_tokens_b
        if U is not None:
            epochs = n_tokens * hp.sum(0) / jnp.asarray(U, hp.dtype)
            x = x * repetition_discount(epochs, jnp.exp(log_r_star[0]))
        return x

    def _readable_common(self):
        out = {"alpha": jax.nn.sigmoid(self.logit_alpha), "beta": jnp.exp(self.log_beta)}
        if type(self).unique_tokens_b is not None:
            out["r_star"] = jnp.exp(self.log_r_star)
        return out


# Starting points are drawn by one compiled program per shape (``init`` is called under ``jax.vmap`` over starts:
# drawn op by op, every random primitive would be compiled on its own, which costs more than the draw).
@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _draw_exposure(key, mean, V: int, K: int, P: int, rep: bool):
    """Fields of a random :class:`ExposureLaw` start: c ~ 0.5 N(0, 1), b ~ log(0.3 mean) + 0.3 N(0, 1),
    E = 0.5 mean, logit alpha ~ U(-1, 1), log beta ~ U(0, 2.5), log R* ~ U(0.5, 3)."""
    kc, kB, ka, kb, kr = jax.random.split(key, 5)
    c = 0.5 * jax.random.normal(kc, (V, K))
    log_B = jnp.log(0.3 * mean) + 0.3 * jax.random.normal(kB, (V,))
    logit_alpha = jax.random.uniform(ka, (), minval=-1.0, maxval=1.0)
    log_beta = jax.random.uniform(kb, (P - 1,), minval=0.0, maxval=2.5)
    log_r_star = jax.random.uniform(kr, (1 if rep else 0,), minval=0.5, maxval=3.0)
    return c, log_B, jnp.log(0.5 * mean), logit_alpha, log_beta, log_r_star


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _draw_joint(key, lo, mean, D, V: int, K: int, P: int, rep: bool):
    """Fields of a random :class:`JointExposureLaw` start (D: the median token count, billions)."""
    kc, kB, ka, kb, kal, kbe, kr = jax.random.split(key, 7)
    b = jax.random.uniform(kb, (), minval=0.2, maxval=0.5)
    log_B = jnp.log(0.3 * mean) + b * jnp.log(D) + 0.3 * jax.random.normal(kB, (V,))
    c = 0.5 * jax.random.normal(kc, (V, K))
    return (c, log_B, jnp.log(0.5 * lo), jnp.log(0.2 * mean), jnp.log(jax.random.uniform(ka, (), minval=0.2, maxval=0.5)),
            jnp.log(b), jax.random.uniform(kal, (), minval=-1.0, maxval=1.0),
            jax.random.uniform(kbe, (P - 1,), minval=0.0, maxval=2.5),
            jax.random.uniform(kr, (1 if rep else 0,), minval=0.5, maxval=3.0))


_BOUND: dict = {}


def bind_to_data(cls, phase_columns, unique_tokens_b, base_domains=None, *, phases=None, phase_shares=None) -> type:
    """A subclass of the exposure law ``cls`` with the phase layout ``phase_columns`` (``(P, K)`` column indices)
    and unique tokens ``unique_tokens_b`` (billions of tokens per base domain, or None); ``base_domains``,
    ``phases`` and ``phase_shares`` name the table's layout (for checks, messages and saved fits). Cached: one
    class per binding."""
    root = cls.unbound or cls
    phase_columns = tuple(tuple(int(j) for j in row) for row in phase_columns)
    opt = lambda v, f: None if v is None else tuple(f(x) for x in v)  # noqa: E731
    unique_tokens_b, base_domains = opt(unique_tokens_b, float), opt(base_domains, str)
    phases, phase_shares = opt(phases, str), opt(phase_shares, float)
    key = (root, phase_columns, unique_tokens_b, base_domains, phases, phase_shares)
    if key not in _BOUND:
        attrs = {"n_phases": len(phase_columns), "phase_columns": phase_columns, "unique_tokens_b": unique_tokens_b,
                 "base_domains": base_domains, "phases": phases, "phase_shares": phase_shares, "unbound": root,
                 "uses_tokens": root.uses_tokens or unique_tokens_b is not None,
                 "__module__": root.__module__, "__doc__": root.__doc__, "__qualname__": root.__qualname__}
        _BOUND[key] = type(root.__name__, (root,), attrs)
    return _BOUND[key]


class ExposureLaw(_PhasedExposure):
    r"""Exposure law with power returns, per target v, at one scale:

        x_k   = d(e_k) * sum_p beta_p s_p w_pk          (beta_0 = 1; s_p w_pk = h[k@p], the stored mixture)
        L_v   = E_v + exp(b_v - sum_k c_vk x_k^alpha)

    Each domain's *effective exposure* x_k weighs the tokens it gets in phase p by a fitted phase weight beta_p (the
    first phase's is 1: only ratios are identifiable), so a late phase can count more per token than an early one.
    Returns are a power saturation x^alpha with 0 < alpha < 1 shared by all domains and targets: concave, with
    diminishing returns, as the data term of Chinchilla-type laws (loss falls as a power of the data seen), and with
    infinite slope at zero exposure, so the first tokens of a missing domain are the most valuable. The returns act
    on the reducible loss L - E_v multiplicatively (a log-linear law in the power features): a domain removes a
    fraction of what is left to learn, so gains from different domains saturate together.

    Why this form: on the bundled swarms, cross-validated by run (``benchmarks/swarm_laws.py``), one shared exponent
    beat a per-domain saturating exponential ``c_k (1 - exp(-x_k / tau_k))`` (twice the nonlinear parameters, tau_k
    per domain, with 155 training runs for 39 domains), and the multiplicative form beat the additive
    ``E - sum_k c_k x_k^alpha`` on ``olmix64`` (held-out RMSE 0.019 against 0.025; equal on ``marin2phase``). With
    alpha = 1/2 the features are the square roots of the weights that the strongest linear reference regresses on.

    Repetition: with unique tokens U_k attached (``for_data`` of a table with ``unique_tokens``), a domain seen
    e_k = D sum_p s_p w_pk / U_k times (epochs of the tokens actually trained on, D in billions of tokens: beta
    weighs what a token is worth, not how often it is seen) has its exposure discounted by d(e) = 1 for e <= 1 and
    d(e) = (1 + R* (1 - exp(-(e - 1)/R*))) / e beyond: repeated tokens are worth R* (1 - exp(-R / R*)) fresh epochs
    for R = e - 1 repetitions (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"), with R* > 0
    fitted. Without unique tokens there is no such term (and no R*).

    c_vk has a free sign: a domain with c_vk < 0 is one whose tokens hurt target v more than the tokens they
    displace. E_v >= 0 enters linearly and is solved exactly by variable projection; the solver moves the others.

    Free parameters: **V (K + 2) + P + r** (K base domains, P phases, r = 1 with unique tokens, else 0): c (V, K),
    b, E (V each), alpha, beta (P - 1) and R*. For ``marin2phase`` (V = 1, K = 39, P = 2, unique tokens): 44; for
    ``olmix64`` (K = 64, one phase, no unique tokens): 67.
    """

    c: jax.Array
    log_B: jax.Array
    log_E: jax.Array
    logit_alpha: jax.Array
    log_beta: jax.Array
    log_r_star: jax.Array

    name: ClassVar[str] = "exposure"
    reference: ClassVar[str] = ("per-domain effective exposure over phases with power returns on the reducible loss; "
                                "repetition discount of Muennighoff et al., Scaling Data-Constrained Language Models, 2023")
    linear_fields: ClassVar[tuple[str, ...]] = ("log_E",)
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {"alpha": (1e-3, 0.999), "beta": (1e-4, 1e4), "r_star": (1e-3, 1e4)}

    def __check_init__(self):
        V = self.log_E.shape[-1]
        if self.c.shape[-2] != V or self.log_B.shape[-1] != V:
            raise ValueError(f"ExposureLaw: c {self.c.shape}, log_B {self.log_B.shape} and log_E {self.log_E.shape} disagree on V")

    @classmethod
    def from_params(cls, E, b, c, alpha, beta=(), r_star=None) -> ExposureLaw:
        """Build from E (V,) > 0, b (V,), c (V, K), 0 < alpha < 1, beta (P - 1,) > 0 and, for a class bound to
        unique tokens, r_star > 0."""
        f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))  # noqa: E731
        rs = jnp.zeros((0,), f(0.0).dtype) if cls.unique_tokens_b is None else jnp.log(f(r_star)).reshape(1)
        a = f(alpha)
        return cls(f(c), f(b), jnp.log(f(E)), jnp.log(a) - jnp.log1p(-a), jnp.log(f(beta)).reshape(-1), rs)

    @classmethod
    def init(cls, key, summary: DataSummary) -> ExposureLaw:
        P, K, rep = cls._layout(summary.n_domains)
        return cls(*_draw_exposure(key, jnp.asarray(summary.loss_mean), summary.n_targets, K, P, rep))

    def params(self):
        return {"E": jnp.exp(self.log_E), "b": self.log_B, "c": self.c, **self._readable_common()}

    def _reducible(self, mixture, n_tokens):
        x = self._exposure(mixture, n_tokens, self.log_beta, self.log_r_star)
        return jnp.exp(self.log_B - self.c @ _power(x, jax.nn.sigmoid(self.logit_alpha)))

    def __call__(self, mixture, model_size, n_tokens):
        return jnp.exp(self.log_E) + self._reducible(mixture, n_tokens)

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = exp(b_v - sum_k c_vk x_k^alpha)`` and the column ``[1]`` of E."""
        base = self._reducible(mixture, n_tokens)
        return base, jnp.ones_like(base)[:, None]

    def with_linear(self, coef):
        tiny = jnp.finfo(coef.dtype).tiny
        return eqx.tree_at(lambda law: law.log_E, self, jnp.log(jnp.maximum(coef[:, 0], tiny)))


class JointExposureLaw(_PhasedExposure):
    r"""Joint mixture x scale exposure law, per target v, for tables with several model sizes N and token counts D:

        L_v = E_v + A_v N^-a + exp(b_v - sum_k c_vk x_k^alpha) D^-b

    with x_k the effective exposures of :class:`ExposureLaw` (phase weights beta_p, repetition discount with R*
    when unique tokens are attached; D in billions of tokens, N in millions of parameters). It is Chinchilla's
    E + A N^-a + B D^-b in which the data term's coefficient depends on the mixture, B(h) = exp(b_v - sum_k c_vk
    x_k^alpha) > 0: a better mixture lowers the loss as more data would, so its gain shrinks as D^-b when the run
    trains longer, and at fixed scale the law ranks mixtures as a log-linear law in the power features x^alpha.
    E_v >= 0 and A_v >= 0 enter linearly and are solved exactly by variable projection.

    Free parameters: **V (K + 3) + P + 2 + r**: c (V, K), b, E, A (V each), a, b (the exponent), alpha, beta
    (P - 1), R* (r = 1 with unique tokens). At one model size and token count, E, A N^-a and the exponents are not
    separable: fit :class:`ExposureLaw` there.
    """

    c: jax.Array
    log_B: jax.Array
    log_E: jax.Array
    log_A: jax.Array
    log_a: jax.Array
    log_b: jax.Array
    logit_alpha: jax.Array
    log_beta: jax.Array
    log_r_star: jax.Array

    name: ClassVar[str] = "exposure_joint"
    reference: ClassVar[str] = ("Chinchilla (Hoffmann et al. 2022) with a mixture-dependent data term over effective "
                                "exposures; repetition discount of Muennighoff et al. 2023")
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    linear_fields: ClassVar[tuple[str, ...]] = ("log_E", "log_A")
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {"alpha": (1e-3, 0.999), "beta": (1e-4, 1e4), "r_star": (1e-3, 1e4),
                                                            "a": (1e-3, 3.0), "b": (1e-3, 3.0)}

    def __check_init__(self):
        V = self.log_E.shape[-1]
        if self.c.shape[-2] != V or self.log_B.shape[-1] != V or self.log_A.shape[-1] != V:
            raise ValueError(f"JointExposureLaw: c {self.c.shape}, log_B {self.log_B.shape}, log_E {self.log_E.shape} "
                             f"and log_A {self.log_A.shape} disagree on V")

    @classmethod
    def from_params(cls, E, A, a, B, b, c, alpha, beta=(), r_star=None) -> JointExposureLaw:
        """Build from E, A, B (V,) > 0, exponents a, b > 0, c (V, K), 0 < alpha < 1, beta (P - 1,) and r_star."""
        f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))  # noqa: E731
        rs = jnp.zeros((0,), f(0.0).dtype) if cls.unique_tokens_b is None else jnp.log(f(r_star)).reshape(1)
        al = f(alpha)
        return cls(f(c), jnp.log(f(B)), jnp.log(f(E)), jnp.log(f(A)), jnp.log(f(a)), jnp.log(f(b)),
                   jnp.log(al) - jnp.log1p(-al), jnp.log(f(beta)).reshape(-1), rs)

    @classmethod
    def init(cls, key, summary: DataSummary) -> JointExposureLaw:
        P, K, rep = cls._layout(summary.n_domains)
        D = summary.n_tokens_ref if np.isfinite(summary.n_tokens_ref) else 1.0
        return cls(*_draw_joint(key, jnp.asarray(summary.loss_min), jnp.asarray(summary.loss_mean), jnp.asarray(D, jnp.result_type(float)),
                                summary.n_targets, K, P, rep))

    def params(self):
        return {"E": jnp.exp(self.log_E), "A": jnp.exp(self.log_A), "a": jnp.exp(self.log_a), "B": jnp.exp(self.log_B),
                "b": jnp.exp(self.log_b), "c": self.c, **self._readable_common()}

    def _data_term(self, mixture, n_tokens):
        x = self._exposure(mixture, n_tokens, self.log_beta, self.log_r_star)
        feats = _power(x, jax.nn.sigmoid(self.logit_alpha))
        return jnp.exp(self.log_B - self.c @ feats - jnp.exp(self.log_b) * jnp.log(n_tokens))

    def __call__(self, mixture, model_size, n_tokens):
        return (jnp.exp(self.log_E) + jnp.exp(self.log_A - jnp.exp(self.log_a) * jnp.log(model_size))
                + self._data_term(mixture, n_tokens))

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = B(h) D^-b`` and the columns ``[1, N^-a]`` of E and A."""
        base = self._data_term(mixture, n_tokens)
        ones = jnp.ones_like(base)
        return base, jnp.stack([ones, ones * jnp.exp(-jnp.exp(self.log_a) * jnp.log(model_size))], axis=-1)

    def with_linear(self, coef):
        tiny = jnp.finfo(coef.dtype).tiny
        return eqx.tree_at(lambda law: (law.log_E, law.log_A), self,
                           (jnp.log(jnp.maximum(coef[:, 0], tiny)), jnp.log(jnp.maximum(coef[:, 1], tiny))))
