"""The law interface.

A law is an :class:`equinox.Module` whose array fields are its free parameters, stored unconstrained (a positive
parameter ``b`` is stored as ``log_b``) so that plain gradient methods can fit it. It predicts the losses of one
run::

    law(mixture, model_size, n_tokens) -> losses

with ``mixture`` of shape ``(K,)`` on the simplex, ``model_size`` in millions of parameters, ``n_tokens`` in
billions of tokens, and losses of shape ``(V,)``. Batching is done from outside with ``jax.vmap``; fits and
predictions call :meth:`AbstractLaw.evaluate_rows` (all runs at once), which a law may override with a faster form.

A new law needs only its array fields and ``__call__``; fit it from an instance (the first start, the other starts
are drawn around it). Optionally it implements ``init`` (a random starting point, given a :class:`DataSummary`),
``params`` (constrained, readable values) and variable projection (``linear_fields``); everything else (fitting,
bootstrap, mixture search, saving) is shared machinery.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..units import check_scale

__all__ = ["AbstractLaw", "DataSummary", "n_params", "param_names"]


@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What a law needs to draw sensible starting points: sizes and loss/scale ranges of the training data.

    ``loss_min``/``loss_max``/``loss_mean`` are per target over measured cells; ``model_size_ref`` and
    ``n_tokens_ref`` are medians in the laws' units (millions of parameters, billions of tokens; NaN if unknown).
    """

    n_domains: int
    n_targets: int
    loss_min: np.ndarray
    loss_max: np.ndarray
    loss_mean: np.ndarray
    model_size_ref: float = float("nan")
    n_tokens_ref: float = float("nan")
    model_size_range: tuple[float, float] = (float("nan"), float("nan"))
    n_tokens_range: tuple[float, float] = (float("nan"), float("nan"))

    @classmethod
    def from_arrays(cls, mixtures, losses, mask, model_size_m, n_tokens_b) -> DataSummary:
        y = np.where(mask, losses, np.nan)
        fill = float(np.nanmean(y)) if np.isfinite(y).any() else 1.0

        def per_target(fn):
            # float64 whatever the fit's dtype: starts are drawn from these and cast to the fit's dtype at the end
            return np.array([fn(y[mask[:, j], j]) if mask[:, j].any() else fill for j in range(y.shape[1])], np.float64)

        def ref(v):
            v = np.asarray(v, float)
            v = v[np.isfinite(v)]
            return (float(np.median(v)), (float(v.min()), float(v.max()))) if v.size else (float("nan"), (float("nan"),) * 2)

        n_ref, n_rng = ref(model_size_m)
        d_ref, d_rng = ref(n_tokens_b)
        return cls(
            n_domains=int(mixtures.shape[1]),
            n_targets=int(losses.shape[1]),
            loss_min=per_target(np.min),
            loss_max=per_target(np.max),
            loss_mean=per_target(np.mean),
            model_size_ref=n_ref,
            n_tokens_ref=d_ref,
            model_size_range=n_rng,
            n_tokens_range=d_rng,
        )


class AbstractLaw(eqx.Module):
    """Base class of every law. Subclasses are final dataclasses with array fields for parameters.

    Class attributes:
      name: short name used by the CLI and saved fits.
      reference: where the form comes from.
      per_domain: True when the law predicts one loss per training domain (V = K, targets aligned to domains);
        False when its V targets are free (the validation domains may differ from the training domains).
      uses_model_size / uses_tokens: whether predictions depend on N / D (rows with unknown N or D are refused).
      uses_mixture: whether predictions depend on the mixture (a table without mixtures is refused otherwise).
      mask_zero_weight: whether fits by default exclude cells whose own domain has weight 0 (for laws whose
        prediction diverges there).
      min_weight: the smallest domain weight at which the law's prediction is meaningful. 0 for laws that are
        finite at zero weight; a law with a term that diverges as h_i -> 0 (such as ``A_i (D h_i)^-a_i``) sets
        the weight below which that term is floored or unbounded. Mixture searches and suggestions treat it as an
        implicit floor, ``h_i >= max(floor_i, min_weight)``.
      sane_ranges: documented plausible ranges of readable parameters (``params()`` name -> (low, high), in the
        law's units): an exponent at the bound of its parametrisation, or a scale many orders beyond the data,
        means the fit ran away; such a fit gets status ``out_of_range`` instead of ``converged``.
    """

    name: ClassVar[str] = "law"
    reference: ClassVar[str] = ""
    per_domain: ClassVar[bool] = True
    uses_model_size: ClassVar[bool] = False
    uses_tokens: ClassVar[bool] = False
    uses_mixture: ClassVar[bool] = True
    mask_zero_weight: ClassVar[bool] = False
    min_weight: ClassVar[float] = 0.0
    #: Fields holding coefficients that enter every prediction linearly once the other parameters are fixed
    #: (variable projection solves them in closed form inside the objective). A law that names fields here
    #: implements :meth:`linear_basis` and :meth:`with_linear`.
    linear_fields: ClassVar[tuple[str, ...]] = ()
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    #: True when every predicted loss is a convex function of the mixture for every parameter value (the log-linear
    #: law: the exponential of an affine function). A weighted mean of such losses then has one minimum on the
    #: bounded simplex, so a mixture search over bootstrap members needs one start per member.
    convex_in_mixture: ClassVar[bool] = False
    #: Raised when the law's formula changes for the same stored parameters: a fit file records the revision (when
    #: not 0) and a file saved under another revision is refused, never evaluated with the new formula.
    revision: ClassVar[int] = 0
    #: What the current revision changed, for the message that refuses a file of another revision.
    revision_note: ClassVar[str] = ""

    @abc.abstractmethod
    def __call__(self, mixture: jax.Array, model_size: jax.Array, n_tokens: jax.Array) -> jax.Array:
        """Predicted losses ``(V,)`` of one run: mixture ``(K,)``, model size (M params), tokens (B tokens)."""

    @classmethod
    def init(cls, key: jax.Array, summary: DataSummary) -> AbstractLaw:
        """A random, plausible starting point for a fit (must be traceable: ``jax.vmap`` over keys).

        Optional: a law without it is fitted from an instance given as the first start, around which the other
        starts are drawn (:func:`mixjax.fitting.init_starts`)."""
        raise NotImplementedError(
            f"{cls.__name__} defines no init(key, summary): pass an instance of it as the law to fit (it is the first "
            "start; the other starts are drawn around it)"
        )

    def params(self) -> dict[str, jax.Array]:
        """Readable (constrained) parameter values by name, for example ``{"b": ..., "c": ...}``. Default: every
        array field under its own name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if eqx.is_inexact_array(getattr(self, f.name))}

    def in_sane_range(self) -> jax.Array:
        """Scalar bool: every parameter named in ``sane_ranges`` lies within its range."""
        values = self.params()
        ok = jnp.asarray(True)
        for name, (low, high) in self.sane_ranges.items():
            if name not in values:  # a subclass without this parameter
                continue
            v = values[name]
            ok = ok & jnp.all((v >= low) & (v <= high))
        return ok

    def out_of_range(self) -> dict[str, tuple[float, float]]:
        """The parameters outside their sane range, with the range (host-side, for messages)."""
        values = self.params()
        out = {}
        for name, (low, high) in self.sane_ranges.items():
            if name not in values:
                continue
            v = np.asarray(values[name])
            if ((v < low) | (v > high)).any():
                out[name] = (low, high)
        return out

    @classmethod
    def has_init(cls) -> bool:
        """Whether the law draws its own random starts (overrides :meth:`init`)."""
        return cls.init.__func__ is not AbstractLaw.init.__func__

    @classmethod
    def for_data(cls, data) -> type:
        """The class of this law to fit to (or predict on) the table ``data``. Default: ``cls`` itself.

        A law that must know its table's layout (the exposure laws read its training phases and unique tokens)
        returns a subclass bound to it; every entry point that resolves a law from a name or class given data
        (:func:`mixjax.fit`, :func:`mixjax.bootstrap`, :func:`mixjax.compare`, the command line) calls this hook.
        Called on a class that is already bound, it returns that class when ``data`` agrees with the binding and
        raises ``ValueError`` naming the difference otherwise. A bound class that saved fits must rebuild also
        defines ``binding()`` (a JSON-able description, None when unbound) and ``from_binding(binding)``
        (classmethods; see :mod:`mixjax.laws.exposure`)."""
        return cls

    def linear_basis(self, mixture: jax.Array, model_size: jax.Array, n_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(base (V,), phi (V, L))`` with ``self(...) = base + sum_l phi[:, l] coef[:, l]`` for the coefficients
        named by ``linear_fields``; must not read those fields."""
        raise NotImplementedError(f"{type(self).__name__} declares no linear coefficients")

    def evaluate_rows(self, mixtures: jax.Array, model_sizes: jax.Array, n_tokens: jax.Array) -> jax.Array:
        """Losses ``(n, V)`` of n runs given as arrays ``(n, K)``, ``(n,)``, ``(n,)``: ``vmap`` of ``__call__``
        over runs. A law may override it with a faster all-runs form (the capacity laws compute every run's
        allocation at once); it must agree with ``__call__`` run by run."""
        return jax.vmap(self)(mixtures, model_sizes, n_tokens)

    def linear_basis_rows(self, mixtures: jax.Array, model_sizes: jax.Array, n_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:meth:`linear_basis` of n runs: ``(base (n, V), phi (n, V, L))`` (``vmap`` over runs unless a law
        overrides it, like :meth:`evaluate_rows`)."""
        return jax.vmap(self.linear_basis)(mixtures, model_sizes, n_tokens)

    def with_linear(self, coef: jax.Array) -> AbstractLaw:
        """This law with its linear coefficients set from ``coef`` (V, L), each >= 0."""
        raise NotImplementedError(f"{type(self).__name__} declares no linear coefficients")

    def predict(self, mixtures, model_size, n_tokens) -> jax.Array:
        """Losses ``(n, V)`` for ``n`` runs: mixtures ``(n, K)``, model sizes and tokens ``(n,)`` or scalars,
        in the laws' units (millions of parameters, billions of tokens)."""
        check_mixture_rows(mixtures, "mixtures")
        h = jnp.asarray(mixtures)
        if not isinstance(h, jax.core.Tracer):
            try:
                jax.eval_shape(self, h[0], jnp.asarray(1.0, h.dtype), jnp.asarray(1.0, h.dtype))
            except Exception as e:  # noqa: BLE001  (a shape error from the law's arrays)
                raise ValueError(f"{type(self).__name__} cannot evaluate mixtures of {h.shape[1]} domains ({' '.join(str(e).split())[:160]})") from None
        for v, kind in ((model_size, "model_size"), (n_tokens, "n_tokens")):
            if not isinstance(v, jax.core.Tracer):
                a = np.asarray(v, dtype=np.float64)
                if not np.all(np.isfinite(a) & (a > 0)):
                    raise ValueError(f"{kind} must be positive and finite, got {v!r}")
                check_scale(a, kind, units="law", where=kind)
        n = h.shape[0]
        for v, kind in ((model_size, "model_size"), (n_tokens, "n_tokens")):
            if jnp.ndim(v) > 1 or (jnp.ndim(v) == 1 and jnp.shape(v)[0] != n):
                raise ValueError(f"{kind} has shape {jnp.shape(v)}; give one value or one per run ({n},)")
        N = jnp.broadcast_to(jnp.asarray(model_size, h.dtype), (n,))
        D = jnp.broadcast_to(jnp.asarray(n_tokens, h.dtype), (n,))
        return predict_rows(self, h, N, D)


def mixture_frame(frame, domains) -> np.ndarray:
    """The (n, K) mixtures of a pandas DataFrame matched to ``domains`` by column name (``<domain>`` or
    ``weight_<domain>``); a missing domain or a column that is no domain is a ValueError naming them."""
    cols = [str(c) for c in frame.columns]
    names = [c[len("weight_"):] if c.startswith("weight_") else c for c in cols]
    missing = [d for d in domains if d not in names]
    extra = [c for c, n in zip(cols, names) if n not in domains]
    if missing or extra:
        raise ValueError(f"mixture columns {cols} do not match the domains {list(domains)} (missing: {missing}; not a "
                         f"domain: {extra}); mixtures are matched to domains by name")
    return np.stack([np.asarray(frame[cols[names.index(d)]], dtype=np.float64) for d in domains], axis=1)


#: A mixture passed to a prediction must sum to 1 within this (renormalize it first, as data loading does).
MIXTURE_SUM_ATOL = 1e-6


def check_mixture_rows(h, label: str = "mixtures", n_domains: int | None = None) -> None:
    """Mixtures given to a prediction or an optimum: a 2-D array (runs, domains), finite, >= 0, each row summing to 1
    within :data:`MIXTURE_SUM_ATOL` (with ``n_domains`` columns when given). Traced values pass unchecked."""
    if isinstance(h, jax.core.Tracer):
        return
    if hasattr(h, "columns") and hasattr(h, "iloc"):
        raise TypeError(f"{label} is a DataFrame, whose columns would be read by position; pass a numpy array in the "
                        "law's domain order, or use Fit.predict / mixjax.mixture_frame to match columns by name")
    a = np.asarray(h)
    if a.ndim != 2:
        hint = " (one run: pass [mixture], a 2-D array of one row)" if a.ndim == 1 else ""
        raise ValueError(f"{label} must be a 2-D array (runs, domains), got shape {a.shape}{hint}")
    if n_domains is not None and a.shape[1] != n_domains:
        raise ValueError(f"{label} has {a.shape[1]} domain columns, expected {n_domains}")
    a = a.astype(np.float64)
    bad = np.argwhere(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"{label} row {bad[0][0]}, column {bad[0][1]} is {a[tuple(bad[0])]!r}; mixture weights must be finite")
    bad = np.argwhere(a < 0)
    if bad.size:
        raise ValueError(f"{label} row {bad[0][0]}, column {bad[0][1]} is {a[tuple(bad[0])]!r}; mixture weights must be >= 0")
    off = np.flatnonzero(np.abs(a.sum(axis=1) - 1.0) > MIXTURE_SUM_ATOL * max(1.0, a.shape[1] / 100))
    if off.size and a.shape[1]:
        r = int(off[0])
        raise ValueError(f"{label} row {r} sums to {a[r].sum():.6g}, expected 1; divide each row by its sum ({off.size} row(s) off)")


@eqx.filter_jit
def predict_rows(law, h, N, D):
    """``law.evaluate_rows`` (a ``vmap`` of the law over rows), compiled once per law type and shapes (op-by-op
    dispatch would compile every primitive of the law separately)."""
    return law.evaluate_rows(h, N, D)


def n_params(law: AbstractLaw) -> int:
    """Number of free (fitted) parameters: the total size of the law's inexact array fields."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(law, eqx.is_inexact_array))
    return int(sum(np.size(x) for x in leaves))


def param_names(law: AbstractLaw) -> list[str]:
    """Names of the readable parameters, in the order of :meth:`AbstractLaw.params`."""
    return list(law.params().keys())
