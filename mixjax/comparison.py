"""Which law to trust: every law fitted and scored on the same held-out cells, one batched call per law.

A *split* is a pair of row sets (train, test). Two protocols:

* cross-validation by mixture (``cv="mixtures:5"``): the mixtures are dealt into k folds at random (seeded); every
  row of a mixture, all its model sizes and checkpoints, lies on one side. ``"rows:k"`` splits rows instead, and
  ``"split"`` uses the dataset's own ``split`` column (``test`` rows held out).
* held-out scale (``holdout_scale="largest"`` or a model size in parameters): fit on the rows of smaller models,
  score the rows at that size: the question asked before a large run. On data with one model size, "scale" is the
  token count. When a run (mixture and model size) has rows at several token counts (intermediate checkpoints),
  only the final checkpoint of each run is used by default (``checkpoints="final"``; ``"all"`` keeps every row).

For one law, every split x start is a member of one batch: a split is a vector of row weights (1 = train, 0 =
held out) over the same fitting problem, so the whole comparison of a law is one compiled engine call. With
cross-validation the batch also holds fits to all rows, which give the law's information criteria.

The work is a grid of cells, law x row group (each split's training rows; with cross-validation also all rows):
a cell is one law fitted on one group (its starts drawn from ``seed + group``) and scored. ``compare(...,
part=(i, n))`` fits only the cells of slice i (:func:`slice_cells`) and returns a :class:`ComparisonPart`;
:func:`merge` builds from all n parts the comparison one run gives.

Scores per law (MRE as a fraction, ``mean |pred - obs| / obs``):

* ``train_mre``: mean over splits of the MRE on the cells each fit trained on;
* ``val_mre``: held-out MRE pooled over every held-out cell the law counts (``n_cells_used``; cells of a domain whose
  weight is 0 are left out by laws that cannot predict them: ``n_cells_excluded``), ``val_mre_all`` over every
  measured held-out cell, and ``val_mre_common`` over the held-out cells that every compared law counts: the ranking
  key, so that no law wins by leaving cells out;
* ``spearman``: Spearman rank correlation (average ranks for ties) of predicted and measured loss across the
  held-out mixtures of one split at one scale (same model size and token count, at least 3 mixtures), averaged
  over those groups and then over targets; None where the predictions are constant (undefined);
* ``best_rank``: the rank (1 = predicted best; tied predictions share their average rank, so a prediction constant
  over m mixtures gives (m + 1) / 2) the law gives the held-out mixture with the lowest measured mean loss (mean
  over the law's targets) among the mixtures of one split at one scale, averaged over those groups;
  ``best_rank_final`` at the largest held-out scale, ``n_mixtures_final`` the mixtures ranked there (per split);
* ``val_rmse``: held-out root mean squared error ``sqrt(mean (pred - obs)^2)`` pooled over the held-out cells the law
  counts, in the targets' own units (BPB for a bits-per-byte target);
* ``regret_at_1``: among the held-out mixtures of one split at one scale, the measured objective (mean over the
  law's targets) of the mixture the law predicts best, minus the lowest measured objective there (0 when the law
  picks the measured best; predictions tied for best count the mean of their measured objectives), averaged over
  those groups (over folds, for cross-validation at one scale);
* ``constant_in_mixture``: some best fit predicts, at every scale, losses that vary across mixtures by at most a
  relative 1e-6 (always True for a law that ignores the mixture): its mixture ranking carries no information;
* ``out_of_range_params``: the parameters of the best fits outside their sane range (``law.out_of_range()``);
* ``aic`` / ``bic``: n log(SSE / n) + 2k / k log n on the training cells of the fit to all rows (cross-validation)
  or of the held-out-scale fit (Gaussian residuals; smaller is better);
* ``status``: the worst status of the best start over the splits, and the counts.

``Comparison.extrapolation`` (:func:`weight_extrapolation`) counts the held-out rows whose mixture puts on some domain
a weight outside that domain's range over the split's training rows, and names the furthest: a law's error there is
an extrapolation error, which can dominate a pooled MRE.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
import warnings
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import distributed
from .data import DataError, MixtureData
from .distributed import check_slice, slice_range
from .fitting import FitConfig, MaxStepsWarning, default_dtype, init_starts, solve
from .laws import DataSummary, n_params
from .laws._base import predict_rows
from .problem import law_class, prepare
from .results import FitFailedError, Status, worst

__all__ = ["Split", "LawScore", "weight_extrapolation", "Comparison", "CheckpointWarning", "compare", "cv_splits", "holdout_scale_split",
           "spearman", "regret_at_1", "has_checkpoints", "final_checkpoint_rows", "checkpoint_mode", "Cell", "ComparisonPart",
           "slice_cells", "merge"]

#: Relative spread below which predictions across mixtures count as constant.
CONSTANT_RTOL = 1e-6


class CheckpointWarning(UserWarning):
    """Rows of intermediate checkpoints were left out of a comparison."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Rows to fit on (``train``) and rows to score (``test``), as boolean ``(n,)`` masks over one dataset."""

    name: str
    train: np.ndarray
    test: np.ndarray


@eqx.filter_jit
def _predict_each(laws, h, N, D):
    """Predictions ``(B, n, V)`` of a batch of laws on the same rows, compiled once per law type and shapes."""
    return eqx.filter_vmap(lambda law: predict_rows(law, h, N, D))(laws)


def cv_splits(data: MixtureData, cv: str = "mixtures:5", seed: int = 0) -> list[Split]:
    """k-fold splits of ``data``: ``"mixtures:k"`` (all rows of one mixture on one side), ``"rows:k"``, or
    ``"split"`` (the dataset's own ``split`` column: ``test`` rows held out)."""
    n = data.n_rows
    if cv == "split":
        if data.split is None:
            raise DataError(f"cv='split' needs a 'split' column, which {data.name!r} does not have")
        test = np.asarray(data.split) == "test"
        if not test.any() or test.all():
            raise DataError(f"the 'split' column of {data.name!r} must mark some but not all rows 'test'")
        return [Split("split", ~test, test)]
    kind, _, k = cv.partition(":")
    if kind not in ("mixtures", "rows") or not k.isdigit() or int(k) < 2:
        raise ValueError(f"cv must be 'mixtures:K', 'rows:K' (K >= 2) or 'split', got {cv!r}")
    k = int(k)
    groups = np.asarray(data.mixture_id) if kind == "mixtures" else np.arange(n)
    labels, group_of = np.unique(groups, return_inverse=True)
    if labels.size < k:
        raise DataError(f"{data.name!r} has {labels.size} {'mixtures' if kind == 'mixtures' else 'rows'}, fewer than the {k} folds asked for")
    fold_of_group = np.random.default_rng(seed).permutation(labels.size) % k
    fold = fold_of_group[group_of]
    return [Split(f"fold {f + 1}/{k}", fold != f, fold == f) for f in range(k)]


def holdout_scale_split(data: MixtureData, scale: str | float = "largest") -> Split:
    """Fit on rows of smaller models, score the rows at model size ``scale`` (parameters; ``"largest"``: the
    largest in the data). With one model size, the token count plays that role."""
    by_size = _by_model_size(data)
    values = data.model_size if by_size else data.n_tokens
    what = "model size" if by_size else "token count"
    finite = np.isfinite(values)
    if np.unique(values[finite]).size < 2:
        raise DataError(f"{data.name!r} has one model size and one token count: there is no larger scale to hold out")
    if scale == "largest":
        target = values[finite].max()
    else:
        target = float(scale)
        if not by_size:
            raise DataError(f"{data.name!r} has one model size; hold out 'largest' (the largest token count) instead")
    test = finite & np.isclose(values, target, rtol=1e-6)
    if not test.any():
        raise DataError(f"no row of {data.name!r} has {what} {target:.4g}; sizes: {sorted(set(values[finite].tolist()))}")
    train = finite & (values < target * (1 - 1e-6))
    if not train.any():
        raise DataError(f"no row of {data.name!r} has a {what} below {target:.4g} to fit on")
    return Split(f"fit {what} < {target:.4g}, score {what} = {target:.4g}", train, test)


def _run_keys(data: MixtureData) -> list[tuple]:
    """(mixture id, model size) of every row: one key per run."""
    size = np.nan_to_num(data.model_size, nan=-1.0)
    return list(zip(np.asarray(data.mixture_id).tolist(), size.tolist()))


def has_checkpoints(data: MixtureData) -> bool:
    """Whether some run (mixture id and model size) has rows at several token counts."""
    tokens = np.nan_to_num(data.n_tokens, nan=-1.0).tolist()
    runs = _run_keys(data)
    return len(set(zip(runs, tokens))) > len(set(runs))


def final_checkpoint_rows(data: MixtureData) -> np.ndarray:
    """Indices (sorted) of the row with the most tokens of every run: the rows of ``data.final_checkpoints()``."""
    order = np.lexsort((-data.n_tokens, data.model_size, data.mixture_id))
    keys = np.stack([data.mixture_id[order], data.model_size[order]], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(order[first])


def _by_model_size(data: MixtureData) -> bool:
    return np.unique(data.model_size[np.isfinite(data.model_size)]).size > 1


def checkpoint_mode(data: MixtureData, checkpoints: str | None, holdout_scale) -> str:
    """``"final"`` or ``"all"``: the default is final checkpoints for a held-out model size on data with
    checkpoints (with one model size the token count is the scale held out, and every row is kept)."""
    if checkpoints is not None:
        if checkpoints not in ("final", "all"):
            raise ValueError(f"checkpoints must be 'final' or 'all', got {checkpoints!r}")
        return checkpoints
    if holdout_scale is not None and _by_model_size(data) and has_checkpoints(data):
        return "final"
    return "all"


#: A held-out weight counts as outside the training range when it exceeds the range by more than this (absolute).
EXTRAPOLATION_ATOL = 1e-9


def weight_extrapolation(data: MixtureData, splits: Sequence[Split]) -> dict[str, Any]:
    """The held-out rows whose mixture puts on some domain a weight outside the range of that domain's weight over
    the split's training rows: their cells are extrapolations for every law, not interpolations.

    Returns ``{"n_rows", "n_test_rows", "worst"}``: held-out rows outside the range (counted once per split they are
    held out in), all held-out rows (likewise), and the row furthest outside (``split``, ``row`` (index into the rows
    compared), ``domain``, ``weight`` and the training ``range`` [lo, hi]); ``worst`` is None when no row is outside.
    """
    h = np.asarray(data.mixtures, np.float64)
    n_out, n_test, worst, worst_gap = 0, 0, None, 0.0
    for s in splits:
        if not s.train.any() or not s.test.any():
            continue
        lo, hi = h[s.train].min(axis=0), h[s.train].max(axis=0)
        test = np.flatnonzero(s.test)
        gap = np.maximum(lo - h[test], h[test] - hi)  # (n_test, K), > 0 outside the range
        outside = (gap > EXTRAPOLATION_ATOL).any(axis=1)
        n_out += int(outside.sum())
        n_test += int(test.size)
        i, j = np.unravel_index(np.argmax(gap), gap.shape)
        if gap[i, j] > max(worst_gap, EXTRAPOLATION_ATOL):
            worst_gap = float(gap[i, j])
            worst = {"split": s.name, "row": int(test[i]), "domain": data.domains[j], "weight": float(h[test[i], j]),
                     "range": [float(lo[j]), float(hi[j])]}
    return {"n_rows": n_out, "n_test_rows": n_test, "worst": worst}


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given their average rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(x.size)
    r[order] = np.arange(1, x.size + 1)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    """Spearman rank correlation of two 1-d samples (average ranks for ties); NaN if either is constant."""
    ra, rb = average_ranks(np.asarray(a, float)), average_ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


@dataclasses.dataclass
class LawScore:
    """One law's line of a :class:`Comparison` (see the module docstring for the definitions)."""

    law: str
    n_params: int
    train_mre: float | None
    val_mre: float | None
    val_mre_all: float | None
    val_mre_common: float | None
    val_rmse: float | None
    regret_at_1: float | None
    n_cells_used: int
    n_cells_excluded: int
    spearman: float | None
    spearman_per_target: dict[str, float | None]
    best_rank: float | None
    best_rank_final: float | None
    n_mixtures_final: float
    constant_in_mixture: bool
    out_of_range_params: list[str]
    aic: float | None
    bic: float | None
    status: str
    status_counts: dict[str, int]
    seconds: float
    fits: list = dataclasses.field(default_factory=list, repr=False)  # best law per split (and the all-rows fit)
    uses_mixture: bool = dataclasses.field(default=True, repr=False)  # the law's form depends on the mixture

    def as_dict(self, timings: bool = False) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("fits", "seconds", "uses_mixture")}
        if timings:
            d["seconds"] = self.seconds
        return d


@dataclasses.dataclass
class Comparison:
    """Result of :func:`compare`: ``scores`` best first (by ``val_mre_common``), ``skipped`` laws with the reason,
    and the protocol. ``rows``: indices of the rows of the data given that were used (the splits' masks are over
    these); ``checkpoints``: ``"final"`` (the final checkpoint of each run) or ``"all"``."""

    data: str
    protocol: str
    splits: list[Split]
    scores: list[LawScore]
    skipped: dict[str, str]
    n_common_cells: int
    checkpoints: str = "all"
    rows: np.ndarray | None = None
    n_rows_input: int | None = None
    extrapolation: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def best(self) -> LawScore:
        return self.scores[0]

    def as_dict(self, timings: bool = False) -> dict[str, Any]:
        n_rows = int(self.splits[0].train.size) if self.splits else None
        return {
            "data": self.data,
            "protocol": self.protocol,
            "checkpoints": self.checkpoints,
            "n_rows": n_rows,
            "n_rows_input": n_rows if self.n_rows_input is None else self.n_rows_input,
            "splits": [{"name": s.name, "n_train_rows": int(s.train.sum()), "n_test_rows": int(s.test.sum())} for s in self.splits],
            "n_common_cells": self.n_common_cells,
            "laws": [s.as_dict(timings) for s in self.scores],
            "skipped": [{"law": k, "reason": v} for k, v in self.skipped.items()],
            "extrapolation": self.extrapolation,
        }

    def table(self) -> list[dict[str, Any]]:
        """Rows for printing: one per law, percentages for MRE. Held-out MRE three ways: ``common`` (the cells every
        law counts: the ranking key), ``own`` (the cells this law counts) and ``all`` (every measured held-out cell);
        ``val RMSE`` and ``regret@1`` in the targets' units."""
        pct = lambda v: None if v is None else 100 * v  # noqa: E731
        return [
            {"law": s.law, "k": s.n_params, "train MRE %": pct(s.train_mre), "val MRE % common": pct(s.val_mre_common),
             "val MRE % own": pct(s.val_mre), "val MRE % all": pct(s.val_mre_all),
             "val RMSE": s.val_rmse, "cells used/excl": f"{s.n_cells_used}/{s.n_cells_excluded}", "Spearman": s.spearman,
             "best rank": s.best_rank, "regret@1": s.regret_at_1, "flat in mixture": _flat_label(s), "AIC": s.aic, "status": s.status,
             "out of range": ",".join(s.out_of_range_params) or "-"}
            for s in self.scores
        ]


def _flat_label(score: LawScore) -> str:
    if not score.constant_in_mixture:
        return "no"
    return "YES (collapsed)" if score.uses_mixture else "by form"


def _summary(arrays, data: MixtureData, rows: np.ndarray) -> DataSummary:
    """Start-drawing summary of the training rows only (nothing of the held-out rows leaks into the starts)."""
    mask = np.asarray(arrays.mask)[rows]
    return DataSummary.from_arrays(np.asarray(arrays.h)[rows], np.asarray(arrays.y)[rows], mask,
                                   data.model_size_m[rows], data.n_tokens_b[rows])


def _law_targets(cls, data: MixtureData) -> list[str]:
    return list(data.domains) if cls.per_domain else list(data.targets)


def _mre(pred, obs, cells) -> float | None:
    if not cells.any() or not np.isfinite(pred[cells]).all():
        return None
    return float(np.mean(np.abs(pred[cells] - obs[cells]) / obs[cells]))


def _scale_groups(data: MixtureData, rows: np.ndarray) -> list[tuple[tuple[float, float], np.ndarray]]:
    """``((model size, token count), row indices)`` of ``rows`` grouped by scale, smallest scale first."""
    idx = np.flatnonzero(rows)
    keys = np.stack([np.nan_to_num(data.model_size[idx], nan=-1.0), np.nan_to_num(data.n_tokens[idx], nan=-1.0)], 1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    return [((float(uniq[g, 0]), float(uniq[g, 1])), idx[inv.ravel() == g]) for g in range(uniq.shape[0])]


def _flat(p: np.ndarray) -> bool:
    """Whether the values ``p`` (finite) vary by at most a relative :data:`CONSTANT_RTOL`."""
    return bool(np.ptp(p) <= CONSTANT_RTOL * np.abs(p).max())


def is_constant_in_mixture(pred: np.ndarray, data: MixtureData) -> bool:
    """Whether predictions ``(n, V)`` of one fit on every row of ``data`` are constant across the mixtures of
    every scale with at least two mixtures (every target; at least one such scale)."""
    seen = False
    for _, rows in _scale_groups(data, np.ones(data.n_rows, bool)):
        for j in range(pred.shape[1]):
            r = rows[np.isfinite(pred[rows, j])]
            if np.unique(data.mixtures[r], axis=0).shape[0] < 2:
                continue
            if not _flat(pred[r, j]):
                return False
            seen = True
    return seen


def _ranking_scores(preds, obs, used, data, splits, targets) -> tuple[dict, float | None, float | None, float, float | None]:
    """Spearman per target, the predicted rank of the measured-best mixture and the regret of the predicted-best
    mixture, over the groups of held-out rows of one split at one scale (each group predicted by one fit)."""
    rho: dict[str, list[float]] = {t: [] for t in targets}
    ranks: list[tuple[tuple[float, float], float, int]] = []
    regrets: list[float] = []
    for pred, split in zip(preds, splits):
        for key, rows in _scale_groups(data, split.test):
            for j, t in enumerate(targets):
                r = rows[used[rows, j] & np.isfinite(pred[rows, j])]
                if r.size >= 3 and not _flat(pred[r, j]):
                    v = spearman(pred[r, j], obs[r, j])
                    if np.isfinite(v):
                        rho[t].append(v)
            cols = [j for j in range(len(targets)) if used[rows, j].all()]
            if rows.size >= 2 and cols:
                p = pred[np.ix_(rows, cols)].mean(1)
                m = obs[np.ix_(rows, cols)].mean(1)
                if np.isfinite(p).all():
                    best = int(np.argmin(m))
                    rank = (rows.size + 1) / 2 if _flat(p) else float(average_ranks(p)[best])
                    ranks.append((key, rank, rows.size))
                    regrets.append(regret_at_1(p, m))
    per_target = {t: (float(np.mean(v)) if v else None) for t, v in rho.items()}
    regret = float(np.mean(regrets)) if regrets else None
    if not ranks:
        return per_target, None, None, 0, regret
    last = max(k for k, _, _ in ranks)
    final = [(r, n) for k, r, n in ranks if k == last]
    n_final = float(np.mean([n for _, n in final]))
    return (per_target, float(np.mean([r for _, r, _ in ranks])), float(np.mean([r for r, _ in final])),
            int(n_final) if n_final.is_integer() else n_final, regret)


def regret_at_1(pred, measured) -> float:
    """Measured objective of the mixture predicted best (lowest ``pred``) minus the lowest measured objective; the
    mean measured objective of the mixtures tied for the lowest prediction (all of them when ``pred`` is flat)."""
    pred, measured = np.asarray(pred, float), np.asarray(measured, float)
    top = np.ones(pred.size, bool) if _flat(pred) else pred == pred.min()
    return float(measured[top].mean() - measured.min())


def _rmse(pred, obs, cells) -> float | None:
    if not cells.any() or not np.isfinite(pred[cells]).all():
        return None
    return float(np.sqrt(np.mean((pred[cells] - obs[cells]) ** 2)))


@dataclasses.dataclass(frozen=True)
class _HeldOut:
    """A law's held-out predictions, observations and counted cells ``(n, V)``, columns named by ``targets``."""

    targets: list[str]
    pred: np.ndarray
    obs: np.ndarray
    used: np.ndarray

    def cells(self, name: str) -> np.ndarray:
        return self.used[:, self.targets.index(name)]


@dataclasses.dataclass
class Cell:
    """One cell of a comparison's work grid: law ``law`` fitted (best of its starts) on row group ``group`` (the
    training rows of split ``group``; with cross-validation the last group is every row), with what its scores
    need: the fit's status, its predictions ``(n, V)`` on every row, whether they are constant in the mixture and
    its parameters out of their sane range. ``fit`` (the fitted law) is kept in memory, not in part files."""

    law: str
    group: int
    status: str
    pred: np.ndarray
    constant: bool
    out_of_range: list[str]
    seconds: float = 0.0
    fit: Any = dataclasses.field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"law": self.law, "group": self.group, "status": self.status, "pred": _floats(self.pred),
                "constant": self.constant, "out_of_range": list(self.out_of_range), "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> Cell:
        return cls(law=str(d["law"]), group=int(d["group"]), status=Status[d["status"]].name,
                   pred=np.array(d["pred"], dtype=np.float64), constant=bool(d["constant"]),
                   out_of_range=[str(x) for x in d["out_of_range"]], seconds=float(d["seconds"]))


@dataclasses.dataclass
class _LawPlan:
    """An applicable law, with what scoring its cells needs besides them: the measured cells ``obs`` (NaN where
    not measured) and those the law counts (``used``), both ``(n, V)`` with columns ``targets``."""

    name: str
    n_params: int
    uses_mixture: bool
    sane: list[str]
    targets: list[str]
    obs: np.ndarray
    used: np.ndarray
    cls: Any = dataclasses.field(default=None, repr=False, compare=False)
    arrays: Any = dataclasses.field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "n_params": self.n_params, "uses_mixture": self.uses_mixture, "sane": self.sane,
                "targets": self.targets, "obs": _floats(self.obs), "used": self.used.astype(int).tolist()}

    @classmethod
    def from_json(cls, d: dict) -> _LawPlan:
        return cls(name=str(d["name"]), n_params=int(d["n_params"]), uses_mixture=bool(d["uses_mixture"]),
                   sane=[str(x) for x in d["sane"]], targets=[str(x) for x in d["targets"]],
                   obs=np.array(d["obs"], dtype=np.float64), used=np.array(d["used"], dtype=bool))


@dataclasses.dataclass
class _Plan:
    """What every slice of one comparison shares: rows, splits, settings and the applicable laws (in order)."""

    data: str
    protocol: str
    checkpoints: str
    rows: np.ndarray
    n_rows_input: int
    splits: list[Split]
    with_full: bool
    model_size: np.ndarray
    n_tokens: np.ndarray
    laws: list[_LawPlan]
    skipped: dict[str, str]
    settings: dict[str, Any]
    extrapolation: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return len(self.splits) + int(self.with_full)

    def groups(self) -> list[np.ndarray]:
        """Row masks the laws are fitted on: each split's training rows, then (cross-validation) every row."""
        return [s.train for s in self.splits] + ([np.ones(self.model_size.size, bool)] if self.with_full else [])

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data, "protocol": self.protocol, "checkpoints": self.checkpoints, "settings": self.settings,
            "n_rows": int(self.model_size.size), "rows": np.asarray(self.rows).tolist(), "n_rows_input": self.n_rows_input,
            "splits": [{"name": s.name, "train": np.flatnonzero(s.train).tolist(), "test": np.flatnonzero(s.test).tolist()}
                       for s in self.splits],
            "with_full": self.with_full, "model_size": _floats(self.model_size), "n_tokens": _floats(self.n_tokens),
            "laws": [lp.to_json() for lp in self.laws], "skipped": [[k, v] for k, v in self.skipped.items()],
            "extrapolation": self.extrapolation,
        }

    @classmethod
    def from_json(cls, d: dict) -> _Plan:
        n = int(d["n_rows"])

        def mask(idx):
            m = np.zeros(n, bool)
            m[np.asarray(idx, dtype=np.int64)] = True
            return m

        return cls(data=str(d["data"]), protocol=str(d["protocol"]), checkpoints=str(d["checkpoints"]),
                   rows=np.asarray(d["rows"], dtype=np.int64), n_rows_input=int(d["n_rows_input"]),
                   splits=[Split(str(s["name"]), mask(s["train"]), mask(s["test"])) for s in d["splits"]],
                   with_full=bool(d["with_full"]), model_size=np.array(d["model_size"], dtype=np.float64),
                   n_tokens=np.array(d["n_tokens"], dtype=np.float64), laws=[_LawPlan.from_json(x) for x in d["laws"]],
                   skipped={str(k): str(v) for k, v in d["skipped"]}, settings=dict(d["settings"]),
                   extrapolation=dict(d.get("extrapolation", {})))


def _floats(a) -> list:
    """An array as nested lists of floats, None where not finite (strict JSON)."""
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a), a, None).tolist()


#: The ``format`` entry of a comparison part file.
PART_FORMAT = "mixjax-compare-part"


@dataclasses.dataclass
class ComparisonPart:
    """Slice ``index`` of ``count`` of a comparison (``compare(..., part=(index, count))``): its cells of the
    (law x group) grid (:func:`slice_cells`) and the plan every slice shares. :func:`merge` joins all slices into
    the comparison one run gives; :meth:`save` / :meth:`load` write and read a part file (JSON, without the
    fitted laws)."""

    index: int
    count: int
    plan: _Plan
    cells: list[Cell]

    def to_json(self) -> dict[str, Any]:
        return {"format": PART_FORMAT, "version": 1, "slice": {"index": self.index, "count": self.count},
                "plan": self.plan.to_json(), "cells": [c.to_json() for c in self.cells]}

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, allow_nan=False)

    @classmethod
    def load(cls, path) -> ComparisonPart:
        what = f"{path} is not a comparison part file (written by mixjax compare --slice I/N --save PART)"
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(what) from None
        if not isinstance(d, dict) or d.get("format") != PART_FORMAT:
            raise ValueError(what)
        if d.get("version") != 1:
            raise ValueError(f"{path}: comparison part file version {d.get('version')!r}; this mixjax reads version 1")
        try:
            return cls(index=int(d["slice"]["index"]), count=int(d["slice"]["count"]), plan=_Plan.from_json(d["plan"]),
                       cells=[Cell.from_json(c) for c in d["cells"]])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"{path}: damaged comparison part file ({type(e).__name__}: {e})") from None


def slice_cells(n_laws: int, n_groups: int, index: int, count: int) -> list[tuple[int, int]]:
    """The cells ``(law, group)`` of slice ``index`` of ``count`` of an ``n_laws x n_groups`` grid: the grid in
    law-major order cut into ``count`` contiguous runs whose sizes differ by at most one (a slice fits few laws)."""
    lo, hi = slice_range(n_laws * n_groups, index, count, what="cells")
    return [divmod(c, n_groups) for c in range(lo, hi)]


def _law_plan(cls, data, groups, splits, starts, cfg, seed) -> _LawPlan:
    """The plan of one law: its prepared arrays and counted cells; a DataError if a group has fewer training
    cells than the law has parameters."""
    arrays, _ = prepare(cls, data, dtype=cfg.dtype)
    _, obs_all = prepare(cls, data, mask_zero_weight=False, dtype=cfg.dtype)
    used_all = np.asarray(arrays.mask)
    one = init_starts(cls, jax.random.PRNGKey(seed), 1, _summary(arrays, data, groups[0]), cfg.dtype)
    k = n_params(jax.tree_util.tree_map(lambda x: x[0], one))
    for g, train in enumerate(groups):
        n_cells = int(used_all[train].sum())
        if n_cells < k:
            raise DataError(f"{n_cells} training cells in {splits[min(g, len(splits) - 1)].name} for {k} parameters")
    return _LawPlan(name=cls.name, n_params=int(k), uses_mixture=bool(cls.uses_mixture), sane=list(cls.sane_ranges),
                    targets=_law_targets(cls, data), obs=np.asarray(obs_all, np.float64), used=used_all, cls=cls, arrays=arrays)


def _score_law(cls, data, plan: _LawPlan, groups, which, starts, cfg, seed) -> list[Cell]:
    """Fit one law on the row groups ``which`` (indices into ``groups``) in one batch; one :class:`Cell` each.
    Group g draws its starts from ``seed + g``, so a cell does not depend on the groups fitted beside it."""
    t0 = time.perf_counter()
    arrays = plan.arrays
    batches, weights = [], []
    for g in which:
        batches.append(init_starts(cls, jax.random.PRNGKey(seed + g), starts, _summary(arrays, data, groups[g]), cfg.dtype))
        weights.append(np.broadcast_to(groups[g].astype(np.float64), (starts, data.n_rows)))
    batch = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs) if isinstance(xs[0], jax.Array) else xs[0], *batches)
    W = jnp.asarray(np.concatenate(weights), jnp.dtype(cfg.dtype))
    res = solve(batch, W, arrays, cfg)
    loss = np.asarray(res.loss).reshape(len(which), starts)
    status = np.asarray(res.status).reshape(len(which), starts)
    pick = np.where(np.isfinite(loss), loss, np.inf).argmin(1) + starts * np.arange(len(which))
    best = jax.tree_util.tree_map(lambda x: x[pick] if isinstance(x, jax.Array) else x, res.law)
    pred = np.asarray(_predict_each(best, arrays.h, arrays.N, arrays.D), np.float64)
    seconds = (time.perf_counter() - t0) / len(which)
    cells = []
    for j, g in enumerate(which):
        law = jax.tree_util.tree_map(lambda x: x[j] if isinstance(x, jax.Array) else x, best)
        cells.append(Cell(law=cls.name, group=int(g), status=Status(int(status.reshape(-1)[pick[j]])).name, pred=pred[j],
                          constant=bool(cls.uses_mixture and is_constant_in_mixture(pred[j], data)),
                          out_of_range=list(law.out_of_range()), seconds=seconds, fit=law))
    return cells


def _law_score(law: _LawPlan, plan: _Plan, cells: list[Cell]) -> tuple[LawScore, _HeldOut]:
    """One law's scores from its cells, one per group in group order."""
    splits, groups = plan.splits, plan.groups()
    pred = np.stack([c.pred for c in cells])
    obs_all, used_all, targets = law.obs, law.used, law.targets
    measured = np.isfinite(obs_all)
    test_pred = np.full(obs_all.shape, np.nan)
    train_mre = []
    for g, s in enumerate(splits):
        test_pred[s.test] = pred[g][s.test]
        train_mre.append(_mre(pred[g], obs_all, used_all & s.train[:, None]))
    test = np.zeros(obs_all.shape[0], bool)
    for s in splits:
        test |= s.test
    used_test = used_all & test[:, None]
    measured_test = measured & test[:, None]
    rho_t, best_rank, final_rank, final_n, regret = _ranking_scores(pred[:len(splits)], obs_all, used_test, plan, splits, targets)
    rho_vals = [v for v in rho_t.values() if v is not None]
    constant = not law.uses_mixture or any(c.constant for c in cells)
    bad: set[str] = set()
    for c in cells:
        bad.update(c.out_of_range)
    out_of_range = [name for name in law.sane if name in bad] + sorted(bad - set(law.sane))

    ic_g = len(groups) - 1  # the all-rows fit (cv) or the one held-out-scale fit
    ic_cells = used_all & groups[ic_g][:, None]
    sse = float(np.sum((pred[ic_g][ic_cells] - obs_all[ic_cells]) ** 2))
    n = int(ic_cells.sum())
    k = law.n_params
    aic = bic = None
    if n > 0 and sse > 0 and np.isfinite(sse):
        aic = n * np.log(sse / n) + 2 * k
        bic = n * np.log(sse / n) + k * np.log(n)
    best_status = [Status[c.status] for c in cells]
    counts = {s.name: sum(b == s for b in best_status) for s in Status}
    fits = [c.fit for c in cells]
    score = LawScore(
        law=law.name,
        n_params=int(k),
        train_mre=None if any(v is None for v in train_mre) else float(np.mean(train_mre)),
        val_mre=_mre(test_pred, obs_all, used_test),
        val_mre_all=_mre(test_pred, obs_all, measured_test),
        val_mre_common=None,
        val_rmse=_rmse(test_pred, obs_all, used_test),
        regret_at_1=regret,
        n_cells_used=int(used_test.sum()),
        n_cells_excluded=int((measured_test & ~used_test).sum()),
        spearman=float(np.mean(rho_vals)) if rho_vals else None,
        spearman_per_target=rho_t,
        best_rank=best_rank,
        best_rank_final=final_rank,
        n_mixtures_final=final_n,
        constant_in_mixture=bool(constant),
        out_of_range_params=out_of_range,
        aic=None if aic is None else float(aic),
        bic=None if bic is None else float(bic),
        status=worst(best_status).name,
        status_counts=counts,
        seconds=float(sum(c.seconds for c in cells)),
        fits=fits if all(f is not None for f in fits) else [],
        uses_mixture=law.uses_mixture,
    )
    return score, _HeldOut(targets, test_pred, obs_all, used_test)


def _applicable(cls, data: MixtureData) -> str | None:
    """Why ``cls`` cannot be fitted to ``data`` (None if it can)."""
    if cls.per_domain and data.n_domains == 0:
        return "predicts one loss per domain; the data has no mixtures"
    if cls.uses_model_size and not np.isfinite(data.model_size).any():
        return "needs model sizes"
    if cls.uses_tokens and not np.isfinite(data.n_tokens).any():
        return "needs token counts"
    return None


def compare(
    data: MixtureData,
    laws: str | Sequence = "all",
    *,
    cv: str | None = None,
    holdout_scale: str | float | None = None,
    starts: int = 8,
    max_steps: int | None = None,
    objective: str = "mse",
    optimizer: str = "lbfgs",
    seed: int = 0,
    dtype: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 2,
    checkpoints: str | None = None,
    part: tuple[int, int] | None = None,
    throw: bool = True,
) -> Comparison | ComparisonPart:
    """Fit and score several laws on the same splits of ``data``; see the module docstring.

    Args:
      laws: ``"all"`` (every registered law that applies to the data), or law names / classes.
      cv: ``"mixtures:k"`` (default ``mixtures:5``, or ``rows:5`` when the data has fewer than 5 mixtures),
        ``"rows:k"`` or ``"split"``. Not with ``holdout_scale``.
      holdout_scale: ``"largest"`` or a model size in parameters: fit below it, score at it.
      starts, max_steps, objective, optimizer, seed, dtype: as :func:`mixjax.fit`, per split. Group g (split g's
        training rows; with cv the last group is every row) draws its starts from ``seed + g``.
      progress: optional ``progress(done, total)`` over laws.
      workers: laws fitted at the same time (threads; default 2: one compiles while another runs; one under
        ``jax.distributed``, where every process must fit in the same order).
      checkpoints: ``"final"`` (only the row with the most tokens of each mixture and model size, as
        ``data.final_checkpoints()``) or ``"all"``. Default: ``"final"`` with ``holdout_scale`` on data with several
        model sizes and intermediate checkpoints (a :class:`CheckpointWarning` says how many rows were left out),
        ``"all"`` otherwise.
      part: ``(i, n)``: fit only slice i of n of the (law x group) cells (:func:`slice_cells`) and return a
        :class:`ComparisonPart`; :func:`merge` joins the n parts into the comparison one run gives.
      throw: raise :class:`mixjax.FitFailedError` when every compared law failed on every split (status
        ``nonfinite``); a law that failed beside others that did not is reported with its status, never raised.
    """
    from .laws import LAWS
    from .resampling import data_fingerprint

    if cv is not None and holdout_scale is not None:
        raise ValueError("give cv or holdout_scale, not both")
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    if part is not None:
        try:
            i_part, n_part = part
        except (TypeError, ValueError):
            raise ValueError(f"part must be a pair (i, n): slice i of n, counted from 0; got {part!r}") from None
        check_slice(i_part, n_part)
    dtype = default_dtype() if dtype is None else dtype
    cfg = FitConfig(objective=objective, optimizer=optimizer, max_steps=max_steps, dtype=dtype)
    mode = checkpoint_mode(data, checkpoints, holdout_scale)
    n_input = data.n_rows
    used_rows = final_checkpoint_rows(data) if mode == "final" else np.arange(n_input)
    if used_rows.size < n_input:
        data = data.subset(used_rows)
        if checkpoints is None:
            warnings.warn(f"{data.name!r} has several checkpoints per run: using the final checkpoint of each run (mixture "
                          f"and model size): {data.n_rows} of {n_input} rows; checkpoints='all' keeps every row",
                          CheckpointWarning, stacklevel=2)
    if holdout_scale is not None:
        splits = [holdout_scale_split(data, holdout_scale)]
        protocol = f"held-out scale: {splits[0].name}"
    else:
        if cv is None:
            cv = "mixtures:5" if np.unique(data.mixture_id).size >= 5 else "rows:5"
        splits = cv_splits(data, cv, seed)
        protocol = f"cross-validation {cv} (seed {seed})"
    explicit = not (isinstance(laws, str) and laws == "all")
    classes = [law_class(x) for x in (laws.split(",") if isinstance(laws, str) and explicit else laws)] if explicit else list(LAWS.values())
    if not classes:
        raise ValueError("no law to compare")
    settings = {"laws": [c.name for c in classes] if explicit else "all", "cv": cv, "holdout_scale": holdout_scale,
                "starts": int(starts), "max_steps": max_steps, "objective": objective, "optimizer": optimizer,
                "seed": int(seed), "dtype": dtype, "data_sha256": data_fingerprint(data)}
    plan = _Plan(data=data.name, protocol=protocol, checkpoints=mode, rows=used_rows, n_rows_input=n_input, splits=splits,
                 with_full=holdout_scale is None, model_size=np.asarray(data.model_size, np.float64),
                 n_tokens=np.asarray(data.n_tokens, np.float64), laws=[], skipped={}, settings=settings,
                 extrapolation=weight_extrapolation(data, splits))
    groups = plan.groups()
    for cls in classes:  # which laws apply (cheap: no fitting), the same in every slice
        try:  # the law interface's hook: a law that reads the table's layout (phases, unique tokens) is bound to it
            bound = cls.for_data(data)
        except (DataError, ValueError) as e:
            reason = str(e)
        else:
            reason = _applicable(bound, data)
            if reason is None:
                try:
                    plan.laws.append(_law_plan(bound, data, groups, splits, starts, cfg, seed))
                    continue
                except DataError as e:
                    reason = str(e)
        if explicit:
            raise DataError(f"law {cls.name} cannot be compared on {data.name!r}: {reason}")
        plan.skipped[cls.name] = reason
    if not plan.laws:
        raise DataError(f"no law applies to {data.name!r}: " + "; ".join(f"{k}: {v}" for k, v in plan.skipped.items()))
    which: dict[int, list[int]] = {}
    if part is None:
        which = {j: list(range(plan.n_groups)) for j in range(len(plan.laws))}
    else:
        for j, g in slice_cells(len(plan.laws), plan.n_groups, i_part, n_part):
            which.setdefault(j, []).append(g)

    def attempt(j):
        lp = plan.laws[j]
        try:
            return _score_law(lp.cls, data, lp, groups, which[j], starts, cfg, seed), None
        except DataError as e:
            if part is not None:
                raise
            return None, str(e)

    # Laws are independent: with workers > 1 one law compiles while another runs (compilation is single-threaded
    # and takes most of the time of a small law); results keep the order of the laws. Under jax.distributed every
    # fit ends in a gather that all processes must reach in the same order: one law at a time.
    workers = 1 if distributed.process_count() > 1 else max(1, int(workers))
    cells: dict[str, list[Cell]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {j: pool.submit(attempt, j) for j in which}
        for done, (j, fut) in enumerate(futures.items()):
            result, reason = fut.result()
            name = plan.laws[j].name
            if result is not None:
                cells[name] = result
            elif explicit:
                for f in futures.values():
                    f.cancel()
                raise DataError(f"law {name} cannot be compared on {data.name!r}: {reason}")
            else:
                plan.skipped[name] = reason
            if progress is not None:
                progress(done + 1, len(futures))
    if part is not None:
        return ComparisonPart(int(i_part), int(n_part), plan, [c for lp in plan.laws for c in cells.get(lp.name, [])])
    comparison = _build(plan, cells)
    if throw and all(sc.status_counts.get(Status.nonfinite.name, 0) == sum(sc.status_counts.values()) for sc in comparison.scores):
        raise FitFailedError(f"every compared law failed on {data.name!r} (non-finite objective at every start): "
                             + ", ".join(sc.law for sc in comparison.scores))
    return comparison


def _build(plan: _Plan, cells: dict[str, list[Cell]]) -> Comparison:
    """The comparison from every cell of the laws in ``cells`` (by law name, in group order)."""
    scored = [_law_score(lp, plan, cells[lp.name]) for lp in plan.laws if lp.name in cells]
    if not scored:
        raise DataError(f"no law applies to {plan.data!r}: " + "; ".join(f"{k}: {v}" for k, v in plan.skipped.items()))
    n_rows = plan.model_size.size
    common = _common_cells([held for _, held in scored])
    n_common = int(sum(c.sum() for c in common.values()))
    for score, held in scored:
        mask = np.stack([common.get(t, np.zeros(n_rows, bool)) for t in held.targets], 1)
        score.val_mre_common = _mre(held.pred, held.obs, mask)
    order = sorted(scored, key=lambda sc: (sc[0].val_mre_common is None, sc[0].val_mre_common or 0.0,
                                           sc[0].val_mre is None, sc[0].val_mre or 0.0))
    for score, _ in order:
        if score.constant_in_mixture and score.uses_mixture:
            warnings.warn(f"a best fit of {score.law} to {plan.data!r} is constant in the mixture (at every scale its predictions "
                          f"vary by at most {CONSTANT_RTOL:g} relative across mixtures): its Spearman and best rank say "
                          "nothing about mixtures", UserWarning, stacklevel=3)
    unfinished = [score.law for score, _ in order if score.status_counts.get(Status.max_steps.name, 0)]
    if unfinished:
        warnings.warn(f"on {plan.data!r} the best start of {', '.join(unfinished)} stopped at the step limit before converging "
                      "in some splits (status max_steps): their scores are those of unfinished fits; pass a larger max_steps",
                      MaxStepsWarning, stacklevel=3)
    return Comparison(data=plan.data, protocol=plan.protocol, splits=plan.splits, scores=[s for s, _ in order],
                      skipped=dict(plan.skipped), n_common_cells=n_common, checkpoints=plan.checkpoints,
                      rows=np.asarray(plan.rows), n_rows_input=plan.n_rows_input, extrapolation=dict(plan.extrapolation))


def _plan_differences(a: dict, b: dict) -> list[str]:
    """What differs between two plans (as JSON): the settings by name, then the other entries."""
    sa, sb = a.get("settings", {}), b.get("settings", {})
    out = [f"{k} {sa.get(k)!r} vs {sb.get(k)!r}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    for k in ("data", "protocol", "checkpoints", "n_rows_input"):
        if a.get(k) != b.get(k):
            out.append(f"{k} {a.get(k)!r} vs {b.get(k)!r}")
    if [x["name"] for x in a["laws"]] != [x["name"] for x in b["laws"]]:
        out.append(f"laws {[x['name'] for x in a['laws']]} vs {[x['name'] for x in b['laws']]}")
    for k in ("rows", "splits", "with_full", "model_size", "n_tokens", "laws", "skipped"):
        if not out and a.get(k) != b.get(k):
            out.append(f"their {k.replace('_', ' ')} differ")
    return out


def merge(parts: Sequence[ComparisonPart], names: Sequence[str] | None = None) -> Comparison:
    """Join the slices of one comparison (``compare(..., part=(i, n))`` for i = 0 .. n-1, in any order) into the
    comparison one run gives (fitted numbers equal up to rounding). Every slice must be present exactly once, and
    all must come from the same data, laws and settings; otherwise a ValueError names the part (``names``: how to
    call them in messages, e.g. file names). Parts read from files hold no fitted laws: ``LawScore.fits`` is
    then empty."""
    parts = list(parts)
    names = distributed.part_names(parts, names, ComparisonPart)
    ref, ref_name = parts[0].plan.to_json(), names[0]
    for p, name in zip(parts[1:], names[1:]):
        diff = _plan_differences(ref, p.plan.to_json())
        if diff:
            raise ValueError(f"{name} is not a slice of the same comparison as {ref_name}: {'; '.join(diff)}")
    n = distributed.check_slice_set([(p.index, p.count) for p in parts], names, "the comparison")
    plan = parts[0].plan
    law_names = [lp.name for lp in plan.laws]
    cells: dict[str, list[Cell]] = {lp.name: [] for lp in plan.laws}
    for p, name in sorted(zip(parts, names), key=lambda x: x[0].index):
        want = [(law_names[j], g) for j, g in slice_cells(len(law_names), plan.n_groups, p.index, n)]
        have = [(c.law, c.group) for c in p.cells]
        if have != want:
            raise ValueError(f"{name}: slice {p.index}/{n} should hold the cells {want}, it holds {have}")
        for c in p.cells:
            cells[c.law].append(c)
    return _build(plan, cells)


def _common_cells(held: list[_HeldOut]) -> dict[str, np.ndarray]:
    """The held-out cells, by target name, that every law counts (targets that every law predicts, cells that no
    law leaves out): all laws are ranked on exactly these cells."""
    names = set.intersection(*(set(h.targets) for h in held))
    return {t: np.logical_and.reduce([h.cells(t) for h in held]) for t in sorted(names)}
