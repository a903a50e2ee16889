"""The scalar objective of a mixture search, ``h -> J(L(h, N, D))``, and the number of domains K a law takes.

``L`` (V,) are a law's predicted losses at the mixture h (K,), model size N (millions of parameters) and tokens D
(billions of tokens). ``J`` is the mean over targets, a weighted mean ``sum_j w_j L_j`` (w normalized to sum 1),
one target's loss (one-hot w), or any differentiable user function ``losses -> scalar``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..laws import AbstractLaw
from .bounds import per_domain_vector

__all__ = ["objective_spec", "mixture_objective"]


class WeightedObjective(eqx.Module):
    """J(L) = sum_j w_j L_j (w normalized to sum 1): mean, weighted mean or a single target."""

    def __call__(self, losses, w):
        return jnp.dot(w, losses)


@dataclasses.dataclass(frozen=True)
class _UserObjective:
    """A user's differentiable ``objective(losses) -> scalar`` (static under jit: one compile per function)."""

    fn: Callable

    def __call__(self, losses, w):
        return jnp.asarray(self.fn(losses)).reshape(())


def objective_spec(V: int, objective, target_weights, target, targets: Sequence[str] | None):
    """The scalar objective of a mixture search over V predicted losses, from the user's arguments (``objective``
    "mean" / "weighted" / a callable, ``target_weights``, ``target``; ``targets`` names them): returns
    ``(callable, normalized weights (V,), description)``. Shared by :func:`optimize_mixture` and
    :func:`mixjax.suggest`."""
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
        return WeightedObjective(), w, f"loss of target {names[j]}"
    if target_weights is not None:
        w = per_domain_vector(target_weights, V, names, "target_weights", 0.0)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"target_weights must be finite, >= 0 and not all 0, got {w.tolist()}")
        return WeightedObjective(), w / w.sum(), "weighted mean loss (" + ", ".join(f"{n}={x:.3g}" for n, x in zip(names, w / w.sum())) + ")"
    if objective != "mean":
        raise ValueError(f"objective={objective!r} needs {'target' if objective == 'target' else 'target_weights'}")
    return WeightedObjective(), np.full(V, 1.0 / V), f"mean loss over {V} targets"


def mixture_objective(law: AbstractLaw, *, model_size=1.0, n_tokens=1.0, objective="mean", target_weights=None, target=None, targets=None):
    """The scalar function ``h -> J(law(h, N, D))`` that :func:`optimize_mixture` minimizes (differentiable with
    ``jax.grad``; N in millions of parameters, D in billions of tokens)."""
    law = getattr(law, "law", law)
    V = jax.eval_shape(law, jnp.zeros(n_domains_of(law)), jnp.asarray(1.0), jnp.asarray(1.0)).shape[0]
    fn, w, _ = objective_spec(V, objective, target_weights, target, targets)
    w = jnp.asarray(w)
    N, D = jnp.asarray(float(model_size)), jnp.asarray(float(n_tokens))
    return lambda h: fn(law(h, N, D), w)


def n_domains_of(law) -> int:
    """K for a law: its ``n_domains`` if it has one, else the trailing parameter size that the law accepts as a
    mixture length (tried by shape evaluation, most common size first)."""
    n = getattr(law, "n_domains", None)
    if isinstance(n, (int, np.integer)):
        return int(n)
    sizes = [int(np.shape(x)[-1]) for x in jax.tree_util.tree_leaves(eqx.filter(law, eqx.is_array)) if np.ndim(x) >= 1]
    dt = jnp.result_type(*jax.tree_util.tree_leaves(eqx.filter(law, eqx.is_inexact_array))) if sizes else float
    for k in sorted(set(sizes) - {1}, key=lambda k: -sizes.count(k)):
        try:  # probed in the law's own float type (a float32 law under strict dtype promotion)
            jax.eval_shape(law, jnp.zeros(k, dt), jnp.asarray(1.0, dt), jnp.asarray(1.0, dt))
            return k
        except Exception:  # noqa: BLE001  (a shape error: not the mixture length)
            continue
    raise ValueError(f"cannot tell the number of domains of {type(law).__name__}; pass domains=[...]")
