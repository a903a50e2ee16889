"""Datasets of training runs: mixtures, scales and per-domain losses.

A :class:`MixtureData` holds one row per training run (or per checkpoint of a run):

* ``mixtures``  ``(n, K)``: the training mixture h, each row on the probability simplex;
* ``model_size`` ``(n,)``: model parameters, a raw count (``1.22e8`` for 122M); NaN when unknown;
* ``n_tokens``  ``(n,)``: training tokens seen, a raw count (``9.998e9``); NaN when unknown;
* ``losses``    ``(n, V)``: validation loss per target, NaN where a cell was not measured;
* ``domains``  (K names) and ``targets`` (V names); ``mixture_id`` ``(n,)`` groups the rows of one mixture.

Laws work in fixed units: model size in **millions of parameters** and tokens in **billions of tokens**
(:meth:`MixtureData.model_size_m`, :meth:`MixtureData.n_tokens_b`), the units of the seed paper's code.

The wide CSV layout: ``weight_<domain>`` columns, ``model_size``, ``n_tokens``, ``<target>_loss`` columns (or one
bare ``loss`` column, target ``loss``), and optionally ``mixture_id`` and ``split``. A table without any
``weight_<domain>`` column (a Chinchilla-type table of model sizes, tokens and losses) loads with K = 0 domains.
Inputs are validated up front; see :func:`from_arrays` for the value rules and :func:`from_dataframe` for how
columns are recognized (or named explicitly with ``domains=`` / ``targets=``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import io
import os
import re
import stat
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .units import MODEL_SIZE_UNIT, TOKENS_UNIT, ScaleError, check_scale

__all__ = [
    "MixtureData",
    "from_arrays",
    "from_dataframe",
    "load_csv",
    "load_dataset",
    "list_datasets",
    "read_table",
    "DataError",
    "MIXTURE_SUM_TOL",
    "phase_domain_name",
]

#: Rows whose weights sum to within this of 1 are renormalized (with a warning when off by more than 1e-9);
#: rows further off are an error.
MIXTURE_SUM_TOL = 0.01
#: Losses outside this range are refused as a unit or recording slip (a loss of 1e-310 or 1e30).
PLAUSIBLE_LOSS = (1e-8, 1e8)
#: A model_size or n_tokens column whose sorted distinct values jump by this factor or more between two neighbours
#: is warned about: the column probably mixes units (thousands next to raw counts, say).
MIXED_UNITS_FACTOR = 500.0
#: Characters a domain name may not hold: the command line reads domain lists and mixtures as comma-separated
#: ``name=weight`` pairs. Target names may not hold the comma (``--targets`` is a comma-separated list).
DOMAIN_NAME_FORBIDDEN = ",="
TARGET_NAME_FORBIDDEN = ","



class DataError(ValueError):
    """Raised for invalid input data; the message names the row and column at fault."""


@dataclasses.dataclass(frozen=True, eq=False)
class MixtureData:
    """A validated table of runs. Arrays are read-only copies; build one with :func:`from_arrays`,
    :func:`from_dataframe`, :func:`load_csv` or :func:`load_dataset`."""

    mixtures: np.ndarray
    model_size: np.ndarray
    n_tokens: np.ndarray
    losses: np.ndarray
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    mixture_id: np.ndarray
    split: np.ndarray | None = None
    name: str = "data"
    #: Multi-phase runs (see :mod:`mixjax.swarm`): the P phase names, their (P,) token shares and the K domain
    #: names; ``domains`` are then the P*K flattened names ``phase_domain_name(domain, phase)``. None: one phase.
    phases: tuple[str, ...] | None = None
    phase_shares: np.ndarray | None = None
    base_domains: tuple[str, ...] | None = None
    #: ``(K,)`` unique tokens available per domain (of ``base_domains``, or of ``domains`` for one phase), or None.
    unique_tokens: np.ndarray | None = None

    # ----------------------------------------------------------------- shapes and units
    @property
    def n_rows(self) -> int:
        return self.mixtures.shape[0]

    @property
    def n_domains(self) -> int:
        return self.mixtures.shape[1]

    @property
    def n_targets(self) -> int:
        return self.losses.shape[1]

    def __len__(self) -> int:
        return self.n_rows

    @property
    def mask(self) -> np.ndarray:
        """``(n, V)`` bool: True where a loss was measured."""
        return np.isfinite(self.losses)

    @property
    def model_size_m(self) -> np.ndarray:
        """Model size in millions of parameters (the laws' unit)."""
        return self.model_size / MODEL_SIZE_UNIT

    @property
    def n_tokens_b(self) -> np.ndarray:
        """Training tokens in billions (the laws' unit)."""
        return self.n_tokens / TOKENS_UNIT

    def __repr__(self) -> str:
        return (
            f"MixtureData(name={self.name!r}, rows={self.n_rows}, domains={self.n_domains}, "
            f"targets={self.n_targets}, scales={len(self.scales())}, missing_cells={int((~self.mask).sum())})"
        )

    # ----------------------------------------------------------------- selection
    def scales(self) -> list[tuple[float, float, int]]:
        """Distinct (model_size, n_tokens) pairs with their row counts, sorted; exact values, so checkpoints at
        nearly equal token counts (1.9998e10 and 2.0e10) stay distinct."""
        keys = np.nan_to_num(np.stack([self.model_size, self.n_tokens], axis=1), nan=-1.0)  # unknown = one group
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        uniq = np.where(uniq < 0, np.nan, uniq)
        return [(float(a), float(b), int(c)) for (a, b), c in zip(uniq, counts)]

    def subset(self, rows: Any, name: str | None = None) -> MixtureData:
        """Rows selected by a boolean mask or integer indices (a new object; this one is unchanged)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.n_rows,):
                raise DataError(f"row mask has shape {rows.shape}, expected ({self.n_rows},)")
            rows = np.flatnonzero(rows)
        if rows.size == 0:
            raise DataError(f"selection from {self.name!r} is empty")

        def take(a):
            return None if a is None else readonly(a[rows])

        return dataclasses.replace(
            self,
            mixtures=take(self.mixtures),
            model_size=take(self.model_size),
            n_tokens=take(self.n_tokens),
            losses=take(self.losses),
            mixture_id=take(self.mixture_id),
            split=take(self.split),
            name=name or self.name,
        )

    def at_scale(self, model_size: float | None = None, n_tokens: float | None = None, rtol: float = 1e-6) -> MixtureData:
        """Rows at a given model size and/or token count (raw counts), matched to relative tolerance ``rtol``."""
        keep = np.ones(self.n_rows, bool)
        if model_size is not None:
            keep &= np.isclose(self.model_size, model_size, rtol=rtol, atol=0)
        if n_tokens is not None:
            keep &= np.isclose(self.n_tokens, n_tokens, rtol=rtol, atol=0)
        if not keep.any():
            avail = ", ".join(f"({a:.4g}, {b:.4g})" for a, b, _ in self.scales()[:12])
            raise DataError(
                f"no rows of {self.name!r} at model_size={model_size}, n_tokens={n_tokens}; available (model_size, "
                f"n_tokens): {avail}{' ...' if len(self.scales()) > 12 else ''}"
            )
        return self.subset(keep)

    def final_checkpoints(self) -> MixtureData:
        """For every (mixture, model size), the row with the most tokens."""
        order = np.lexsort((-self.n_tokens, self.model_size, self.mixture_id))
        keys = np.stack([self.mixture_id[order], self.model_size[order]], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        return self.subset(np.sort(order[first]))

    def split_rows(self, val_fraction: float = 0.2, seed: int = 0, by: str = "row") -> tuple[MixtureData, MixtureData]:
        """Reproducible random train/validation split. ``by="mixture"`` keeps every row of one mixture on the
        same side (no leakage of a mixture across checkpoints or scales)."""
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
        rng = np.random.default_rng(seed)
        if by == "row":
            perm = rng.permutation(self.n_rows)
            n_val = max(1, int(round(val_fraction * self.n_rows)))
            val = np.zeros(self.n_rows, bool)
            val[perm[:n_val]] = True
        elif by == "mixture":
            ids = np.unique(self.mixture_id)
            perm = rng.permutation(ids)
            n_val = max(1, int(round(val_fraction * ids.size)))
            val = np.isin(self.mixture_id, perm[:n_val])
        else:
            raise DataError(f"by must be 'row' or 'mixture', got {by!r}")
        if val.all() or not val.any():
            raise DataError(f"split of {self.n_rows} rows with val_fraction={val_fraction} leaves one side empty")
        return self.subset(~val, name=f"{self.name}[train]"), self.subset(val, name=f"{self.name}[val]")

    def by_split(self, value: str) -> MixtureData:
        """Rows whose ``split`` column equals ``value`` (the source's own split, where it has one)."""
        if self.split is None:
            raise DataError(f"{self.name!r} has no 'split' column")
        return self.subset(self.split == value, name=f"{self.name}[{value}]")

    def select_targets(self, names: Sequence[str]) -> MixtureData:
        """Keep only the named loss columns, in the given order."""
        missing = [t for t in names if t not in self.targets]
        if missing:
            raise DataError(f"unknown target(s) {missing}; available: {list(self.targets)}")
        idx = [self.targets.index(t) for t in names]
        return dataclasses.replace(self, losses=readonly(self.losses[:, idx]), targets=tuple(names))

    def align(self, domains: Sequence[str], targets: Sequence[str] | None = None, *, to: str = "the fit") -> MixtureData:
        """This table matched by name to ``domains`` (its weight columns reordered to that order) and, when given, to
        ``targets`` (only those loss columns, in that order). Different domain names or a missing target is a
        :class:`DataError` naming what is missing and what is extra (``to`` names the other side)."""
        domains = tuple(domains)
        out = self
        if self.domains != domains:
            missing = [d for d in domains if d not in self.domains]
            extra = [d for d in self.domains if d not in domains]
            if missing or extra:
                raise DataError(
                    f"{self.name!r} has domains {list(self.domains)}, {to} has {list(domains)} (missing here: {missing}; "
                    f"not in {to}: {extra}); mixtures are matched to domains by name"
                )
            idx = [self.domains.index(d) for d in domains]
            out = dataclasses.replace(self, mixtures=readonly(self.mixtures[:, idx]), domains=domains)
        if targets is not None and out.targets != tuple(targets):
            missing = [t for t in targets if t not in out.targets]
            if missing:
                raise DataError(f"{self.name!r} has no loss column for target(s) {missing} of {to} (its targets: {list(out.targets)})")
            out = out.select_targets(list(targets))
        return out

    def domain_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """Losses aligned to the training domains, for laws that predict one loss per training domain:
        ``(n, K)`` losses (NaN where missing or where the domain has no loss column) and the ``(n, K)`` mask.
        Loss columns that match no domain (for example ``openhermes``) are not used by such laws."""
        out = np.full((self.n_rows, self.n_domains), np.nan)
        for k, d in enumerate(self.domains):
            if d in self.targets:
                out[:, k] = self.losses[:, self.targets.index(d)]
        return out, np.isfinite(out)

    def unmatched_targets(self) -> tuple[str, ...]:
        """Targets whose name matches no training domain: laws that predict one loss per domain ignore them."""
        return tuple(t for t in self.targets if t not in self.domains)

    def domains_without_loss(self) -> tuple[str, ...]:
        """Domains that have no loss column of their own: a per-domain law has no observation of their loss."""
        return tuple(d for d in self.domains if d not in self.targets)

    # ----------------------------------------------------------------- phases and exposures
    def phase_index(self) -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...], np.ndarray]:
        """(phases, shares, base domains, (P, K) column index into ``mixtures``), matched by name."""
        if self.phases is None:
            return ("all",), np.ones(1), self.domains, np.arange(self.n_domains)[None, :]
        base = self.base_domains if self.base_domains is not None else ()
        shares = np.asarray(self.phase_shares, dtype=np.float64) if self.phase_shares is not None else None
        if shares is None or shares.shape != (len(self.phases),) or len(self.phases) * len(base) != self.n_domains:
            raise DataError(
                f"{self.name!r}: inconsistent phase metadata ({len(self.phases)} phases, "
                f"{None if shares is None else shares.shape} shares, {len(base)} base domains, {self.n_domains} columns)"
            )
        col = {d: j for j, d in enumerate(self.domains)}
        try:
            idx = np.array([[col[phase_domain_name(d, p)] for d in base] for p in self.phases], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"{self.name!r}: no mixture column {e.args[0]!r} for its phase metadata") from None
        return self.phases, shares, base, idx

    def phase_weights(self) -> np.ndarray:
        """``(n, P, K)`` mixture of each training phase: ``w[r, p, k] = h[r, p*K + k] / share_p`` (each phase's row
        sums to 1). A table without phases gives P = 1, ``w[:, 0] = h``."""
        _, shares, _, idx = self.phase_index()
        return self.mixtures[:, idx] / shares[None, :, None]

    def exposures(self) -> np.ndarray:
        """``(n, K)`` epochs over each domain's unique tokens: ``E[r, k] = D_r * sum_p h[r, p*K + k] / U_k`` with
        ``D_r`` the run's training tokens (raw count) and ``U_k`` the unique tokens of domain k. A
        :class:`DataError` when unique tokens or a row's token count are unknown."""
        _, _, base, idx = self.phase_index()
        if self.unique_tokens is None:
            raise DataError(
                f"{self.name!r} has no unique-token counts per domain: attach them (unique_tokens= of the "
                "mixjax.swarm loaders, or mixjax.swarm.with_unique_tokens) to compute exposures"
            )
        U = np.asarray(self.unique_tokens, dtype=np.float64)
        if U.shape != (len(base),):
            raise DataError(f"{self.name!r}: {U.shape} unique-token counts for {len(base)} domains")
        bad = np.flatnonzero(~np.isfinite(self.n_tokens))
        if bad.size:
            raise DataError(
                f"{self.name!r}: the training token count (n_tokens) is unknown in {bad.size} row(s) (first: row "
                f"{bad[0]}); exposures need it"
            )
        return self.n_tokens[:, None] * self.mixtures[:, idx].sum(axis=1) / U[None, :]

    def to_dataframe(self):
        """The wide layout as a pandas DataFrame (round-trips through :func:`from_dataframe`)."""
        import pandas as pd

        cols: dict[str, Any] = {"mixture_id": self.mixture_id}
        for k, d in enumerate(self.domains):
            cols[f"weight_{d}"] = self.mixtures[:, k]
        cols["model_size"] = self.model_size
        cols["n_tokens"] = self.n_tokens
        for k, t in enumerate(self.targets):
            cols["loss" if t == "loss" else f"{t}_loss"] = self.losses[:, k]
        if self.split is not None:
            cols["split"] = self.split
        return pd.DataFrame(cols)


# --------------------------------------------------------------------------- constructors
def data_fingerprint(data: MixtureData) -> str:
    """sha256 of a dataset's rows (mixtures, scales, losses, mixture ids) and names: a fit records it, and the parts
    of one bootstrap or comparison must come from the same data."""
    h = hashlib.sha256()
    for a in (data.mixtures, data.model_size, data.n_tokens, data.losses, data.mixture_id):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    h.update(repr((tuple(data.domains), tuple(data.targets))).encode())
    return h.hexdigest()


def phase_domain_name(domain: str, phase: str) -> str:
    """The flattened domain name of ``domain`` in training phase ``phase``: ``"<domain>@<phase>"``. Phase names
    contain no ``@``, so the name splits back uniquely at its last ``@`` whatever the domain name holds."""
    return f"{domain}@{phase}"


def readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _mixture_ids(mixtures: np.ndarray) -> np.ndarray:
    """Group rows with the same mixture (to 1e-9) under one integer id."""
    _, inv = np.unique(np.round(mixtures, 9), axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def _check_weights(h: np.ndarray, domains: Sequence[str], name: str, sum_tol: float) -> np.ndarray:
    """Mixture rules of :func:`from_arrays` (see :func:`check_mixture_weights`) on ``weight_<domain>`` columns."""
    return check_mixture_weights(h, [f"weight_{d}" for d in domains], sum_tol=sum_tol, name=name, stacklevel=4)


def check_mixture_weights(W: np.ndarray, columns: Sequence[str], *, sum_tol: float, name: str, label: str = "",
                          where=lambda r: f"row {r}", stacklevel: int = 3) -> np.ndarray:
    """Mixture rows: finite, >= 0, each summing to 1 within ``sum_tol`` (then renormalized, with a warning when off
    by more than 1e-9; further off is an error naming the columns read). ``columns`` name the columns in messages,
    ``where(r)`` the row, ``label`` prefixes errors. Returns the renormalized copy."""
    prefix = f"{label}: " if label else ""
    bad = np.argwhere(~np.isfinite(W))
    if bad.size:
        r, c = bad[0]
        raise DataError(f"{prefix}mixture weight is not finite at {where(r)}, column {columns[c]}: {float(W[r, c])!r}")
    bad = np.argwhere(W < 0)
    if bad.size:
        r, c = bad[0]
        raise DataError(f"{prefix}negative mixture weight at {where(r)}, column {columns[c]}: {float(W[r, c])!r}")
    if not np.isfinite(sum_tol) or sum_tol < 0:
        raise DataError(f"sum_tol must be a finite number >= 0, got {sum_tol!r}")
    sums = W.sum(axis=1)
    dev = np.abs(sums - 1.0)
    far = np.flatnonzero(dev > sum_tol)
    if far.size:
        r = far[0]
        raise DataError(
            f"{prefix}mixture {where(r)} sums to {sums[r]:.6g} over the weight columns {', '.join(columns)}, expected 1 "
            f"+- {sum_tol} ({far.size} row(s) off); fix the weights, name the domain columns (domains= / --domains), or "
            "pass a larger sum_tol (--sum-tol) to renormalize"
        )
    off = np.flatnonzero(dev > 1e-9)
    if off.size:
        warnings.warn(
            f"{name}: {off.size} mixture row(s) do not sum to 1 (largest deviation {dev.max():.3g} at "
            f"{where(int(np.argmax(dev)))}); renormalized each row to sum 1",
            stacklevel=stacklevel,
        )
    return W / sums[:, None]


def from_arrays(
    mixtures: Any,
    losses: Any,
    model_size: Any = None,
    n_tokens: Any = None,
    *,
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    mixture_id: Any = None,
    split: Any = None,
    name: str = "data",
    sum_tol: float = MIXTURE_SUM_TOL,
) -> MixtureData:
    """Validate arrays and build a :class:`MixtureData`. Nothing passed in is modified.

    Rules: ``mixtures`` may have 0 columns or be None (a table without mixtures: K = 0, no weight rule applies);
    otherwise mixtures must be finite and >= 0; a row whose weights sum to 1 within ``sum_tol`` is renormalized
    (warning when off by more than 1e-9); further off is an error. Losses must be > 0 where given; NaN marks a
    missing cell (masked), +-inf and values <= 0 are errors. ``model_size`` and ``n_tokens`` are raw counts (a
    scalar broadcasts to every row); NaN means unknown, and laws that need the value refuse such rows.

    Names: a domain name must be non-empty and hold neither ``,`` nor ``=``, a target name must be non-empty and
    hold no ``,`` (the command line reads them back from comma-separated ``name=weight`` lists). A loss column with
    at least two measured values, all equal (a constant loss), is warned about; when every loss column is constant
    the table is an error (nothing to fit). A ``model_size`` or ``n_tokens`` column whose sorted distinct values
    jump by :data:`MIXED_UNITS_FACTOR` or more between two neighbours is warned about (mixed units).
    """
    y = np.array(losses, dtype=np.float64, copy=True)
    if mixtures is None:  # a table without mixtures: model sizes, tokens and losses only
        mixtures = np.zeros((y.shape[0] if y.ndim else 0, 0))
    h = np.array(mixtures, dtype=np.float64, copy=True)
    if h.ndim == 1:
        h = h[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if h.ndim != 2:
        raise DataError(f"mixtures must be 2-D (rows, domains), got shape {h.shape}")
    if y.ndim != 2:
        raise DataError(f"losses must be 2-D (rows, targets), got shape {y.shape}")
    n, k = h.shape
    if n == 0:
        raise DataError(f"dataset {name!r} is empty (0 rows)")
    if y.shape[0] != n:
        raise DataError(f"losses has {y.shape[0]} rows but mixtures has {n}")
    domains = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(k))
    targets = tuple(targets) if targets is not None else (domains if y.shape[1] == k else tuple(f"target{i}" for i in range(y.shape[1])))
    if len(domains) != k:
        raise DataError(f"{len(domains)} domain names for {k} mixture columns")
    if len(targets) != y.shape[1]:
        raise DataError(f"{len(targets)} target names for {y.shape[1]} loss columns")
    for label, names in (("domain", domains), ("target", targets)):
        if len(set(names)) != len(names):
            raise DataError(f"duplicate {label} names: {sorted(x for x in names if names.count(x) > 1)}")
    _check_names(domains, targets, name)

    def scale(v, label):
        if v is None:
            return np.full(n, np.nan)
        v = np.array(v, dtype=np.float64, copy=True)
        v = np.broadcast_to(v, (n,)).copy() if v.ndim == 0 else v
        if v.shape != (n,):
            raise DataError(f"{label} has shape {v.shape}, expected ({n},)")
        bad = np.flatnonzero(~np.isnan(v) & ~(np.isfinite(v) & (v > 0)))
        if bad.size:
            raise DataError(f"{label} row {bad[0]} is {float(v[bad[0]])!r}; expected a positive raw count")
        try:
            check_scale(v, label, where=f"{name}: {label}")
        except ScaleError as e:
            raise DataError(str(e)) from None
        _check_unit_jumps(v, label, name)
        return v

    N = scale(model_size, "model_size")
    D = scale(n_tokens, "n_tokens")

    if k > 0:
        h = _check_weights(h, domains, name, sum_tol)


    bad = np.argwhere(np.isinf(y))
    if bad.size:
        r, c = bad[0]
        raise DataError(f"loss is infinite at row {r}, column {_target_column(targets[c])}")
    bad = np.argwhere(np.isfinite(y) & (y <= 0))
    if bad.size:
        r, c = bad[0]
        raise DataError(f"loss must be positive; row {r}, column {_target_column(targets[c])} is {float(y[r, c])!r}")
    if not np.isfinite(y).any():
        raise DataError(f"dataset {name!r} has no measured loss (every cell is missing)")
    lo, hi = PLAUSIBLE_LOSS
    bad = np.argwhere(np.isfinite(y) & ((y < lo) | (y > hi)))
    if bad.size:
        r, c = bad[0]
        raise DataError(
            f"{name}: loss at row {r}, column {_target_column(targets[c])} is {float(y[r, c])!r}, outside the plausible "
            f"range {lo:g} to {hi:g} of a loss (nats or bits per token or byte); check the column's units"
        )
    empty = [_target_column(t) for t, m in zip(targets, np.isfinite(y).any(axis=0)) if not m]
    if empty:
        raise DataError(f"{name}: loss column(s) {empty} hold no measured value; drop them or name the targets to read (targets= / --targets)")
    _check_repeated_rows(h, N, D, y, name)
    _check_loss_direction(h, N, D, y, targets, name)
    _check_constant_targets(y, targets, name)

    if mixture_id is None:
        mid = _mixture_ids(h) if k > 0 else np.zeros(n, np.int64)  # no mixture: every row has the same (empty) one
    else:
        mid = np.asarray(mixture_id)
        if mid.shape != (n,):
            raise DataError(f"mixture_id has shape {mid.shape}, expected ({n},)")
        if mid.dtype.kind == "f" and np.isnan(mid).any():
            mid = _mixture_ids(h) if k > 0 else np.zeros(n, np.int64)
    sp = None if split is None else np.asarray(split).astype(str)
    if sp is not None and sp.shape != (n,):
        raise DataError(f"split has shape {sp.shape}, expected ({n},)")

    return MixtureData(
        mixtures=readonly(h),
        model_size=readonly(N),
        n_tokens=readonly(D),
        losses=readonly(y),
        domains=domains,
        targets=targets,
        mixture_id=readonly(mid),
        split=None if sp is None else readonly(sp),
        name=name,
    )


def _check_names(domains: Sequence[str], targets: Sequence[str], name: str) -> None:
    """Domain and target names the command line can give back: non-empty, without its separators."""
    for d in map(str, domains):
        col = f"weight_{d}"
        if not d:
            raise DataError(f"{name}: column {col!r} names no domain (expected weight_<domain>); rename the column or drop it")
        bad = [c for c in DOMAIN_NAME_FORBIDDEN if c in d]
        if bad:
            raise DataError(
                f"{name}: domain {d!r} (column {col!r}) contains {' and '.join(map(repr, bad))}; the command line reads "
                "domain lists and mixtures as comma-separated name=weight pairs, so rename the column"
            )
    for t in map(str, targets):
        col = _target_column(t)
        if not t:
            raise DataError(f"{name}: column {col!r} names no target (expected <target>_loss); rename the column or drop it")
        bad = [c for c in TARGET_NAME_FORBIDDEN if c in t]
        if bad:
            raise DataError(
                f"{name}: target {t!r} (column {col!r}) contains {' and '.join(map(repr, bad))}; the command line reads "
                "target lists as comma-separated names, so rename the column"
            )


def _check_unit_jumps(v: np.ndarray, label: str, name: str) -> None:
    """Warn when the sorted distinct values of a scale column jump by :data:`MIXED_UNITS_FACTOR` or more between two
    neighbours (9e4 next to 9e7: thousands of parameters mixed with raw counts, say)."""
    u = np.unique(v[np.isfinite(v)])
    if u.size < 2:
        return
    ratio = u[1:] / u[:-1]
    i = int(np.argmax(ratio))
    if ratio[i] >= MIXED_UNITS_FACTOR:
        warnings.warn(
            f"{name}: column {label} jumps from {u[i]:.6g} to {u[i + 1]:.6g} between neighbouring values, a factor of "
            f"{ratio[i]:.4g} (>= {MIXED_UNITS_FACTOR:g}): mixed units? Every value should be a raw count",
            stacklevel=4,
        )


def _check_constant_targets(y: np.ndarray, targets: Sequence[str], name: str) -> None:
    """A loss column whose measured values (two or more) are all equal holds nothing to fit: warned about, and an
    error when every loss column is so."""
    const = []
    for j, t in enumerate(targets):
        v = y[:, j][np.isfinite(y[:, j])]
        if v.size >= 2 and v.min() == v.max():
            const.append(_target_column(t))
    if not const:
        return
    if len(const) == len(targets):
        raise DataError(
            f"{name}: every loss column ({', '.join(const)}) holds one value in all its measured rows (a constant "
            "loss): there is nothing to fit"
        )
    warnings.warn(
        f"{name}: loss column(s) {', '.join(const)} hold one value in all their measured rows (a constant loss): "
        "there is nothing to fit for those targets; drop them or name the targets to read (targets= / --targets)",
        stacklevel=3,
    )


def _check_loss_direction(h, N, D, y, targets, name: str) -> None:
    """Warn when a target mostly rises with model size or tokens among runs of the same mixture: losses fall with
    scale, so such a column is likely a score where higher is better (an accuracy), which mixjax would minimise.
    Counted over pairs of rows with the same mixture and one scale equal, the other larger; warned when at least 10
    pairs exist and more than 80 % of them rise."""
    if h.shape[0] < 2:
        return
    key = np.round(h, 9)
    for j, t in enumerate(targets):
        up = total = 0
        for fixed, moving in ((D, N), (N, D)):
            ok = np.isfinite(fixed) & np.isfinite(moving) & np.isfinite(y[:, j])
            rows = np.flatnonzero(ok)
            if rows.size < 2:
                continue
            groups = {}
            for r in rows:
                groups.setdefault((key[r].tobytes(), fixed[r]), []).append(r)
            for members in groups.values():
                if len(members) < 2:
                    continue
                m = np.asarray(members)
                order = m[np.argsort(moving[m], kind="stable")]
                a, b = order[:-1], order[1:]
                larger = moving[b] > moving[a]
                up += int(np.sum(larger & (y[b, j] > y[a, j])))
                total += int(np.sum(larger))
        if total >= 10 and up > 0.8 * total:
            warnings.warn(
                f"{name}: {_target_column(t)} rises with model size or tokens in {up} of {total} comparable pairs of runs; "
                "losses fall with scale, so it may be a score where higher is better (mixjax minimises every target: "
                "pass 1 - accuracy or a loss)",
                stacklevel=4,
            )


def _check_repeated_rows(h, N, D, y, name: str) -> None:
    """All rows identical is an error (nothing to fit); rows repeated exactly (mixture, scale and every loss) are
    warned about: each copy counts as one more run in a fit and in a bootstrap."""
    n = h.shape[0]
    if n < 2:
        return
    table = np.concatenate([h, N[:, None], D[:, None], y], axis=1)
    _, first, counts = np.unique(np.nan_to_num(table, nan=-1.0), axis=0, return_index=True, return_counts=True)
    if first.size == 1:
        raise DataError(f"{name}: all {n} rows are identical (same mixture, scale and losses): there is nothing to fit")
    repeated = int((counts - 1).sum())
    if repeated:
        r = int(first[np.argmax(counts)])
        warnings.warn(
            f"{name}: {repeated} row(s) repeat an earlier row exactly (mixture, scale and every loss; row {r} appears "
            f"{int(counts.max())} times); each copy counts as another run. Drop the copies unless they are real replicates",
            stacklevel=4,
        )


_MANGLED = re.compile(r"^(?P<base>.+)\.(?P<n>[1-9][0-9]*)$")


def check_column_names(cols: list[str], name: str, header: Sequence[str] | None = None) -> None:
    """Duplicate column names are an error: pandas keeps the first and renames the copies ``X.1``, ``X.2``..., which
    would otherwise become a new domain or target (or be dropped) without a word. ``header``: the raw names of the
    file's first line, when known."""
    raw = [str(c) for c in (header if header is not None else cols)]
    seen: dict[str, int] = {}
    for c in raw:
        seen[c] = seen.get(c, 0) + 1
    dups = sorted(c for c, k in seen.items() if k > 1)
    if dups:
        raise DataError(f"{name}: duplicate column name(s) {dups} in the header; every column must have its own name")
    names = set(cols)
    for c in cols:
        m = _MANGLED.match(c)
        if m and m.group("base") in names:
            raise DataError(
                f"{name}: column {c!r} looks like a renamed duplicate of {m.group('base')!r} (pandas renames repeated "
                "header names X to X.1, X.2, ...); give every column its own name"
            )


def numeric_column(df, c: str, name: str) -> np.ndarray:
    """Column ``c`` as float64 (NaN for empty cells); a cell that is not a number is an error naming row and value."""
    import pandas as pd

    col = df[c]
    try:
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        pass
    conv = pd.to_numeric(col, errors="coerce")
    bad = np.flatnonzero(conv.isna().to_numpy() & col.notna().to_numpy())
    r = int(bad[0]) if bad.size else 0
    raise DataError(f"{name}: column {c!r} is not numeric (row {r} is {col.iloc[r]!r})") from None


def _target_column(t: str) -> str:
    return "loss" if t == "loss" else f"{t}_loss"


def from_dataframe(
    df,
    *,
    name: str = "data",
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    sum_tol: float = MIXTURE_SUM_TOL,
    header: Sequence[str] | None = None,
) -> MixtureData:
    """Read the wide layout from a pandas DataFrame (the frame is not modified).

    Columns, when named explicitly: ``domains=["a", "b"]`` reads the mixture from ``weight_a``, ``weight_b`` (other
    ``weight_*`` columns are ignored; an empty list means no mixture, K = 0); ``targets=["x", "y"]`` reads losses from
    ``x_loss``, ``y_loss`` (``"loss"`` names a bare ``loss`` column). Every named column must exist.

    Columns, when recognized by name: every ``<target>_loss`` column (and a bare ``loss`` column) is a target
    (``train_loss`` included: name the targets to leave it out). A ``weight_<domain>`` column is a domain only if its
    values lie in [0, 1] and the rows sum to 1 with the other weight columns: a column such as ``weight_decay`` that
    breaks either rule is an error naming it (name the domains to read such a table). A weight column that is 0 in
    every row is kept with a warning naming it. No ``weight_*`` column at all: a table without mixtures (K = 0).
    A column named just ``weight_`` or ``_loss`` (no name) is an error, as is a name the command line cannot give back
    (see :func:`from_arrays`).

    Duplicate column names are an error (``header``: the raw header names, when read from a file). ``model_size``
    and ``n_tokens`` give the scale (raw counts; may be absent or empty); ``mixture_id`` and ``split`` are kept where
    present; other columns are ignored."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    cols = [str(c) for c in df.columns]
    check_column_names(cols, name, header)
    df = df.set_axis(cols, axis=1)
    if len(df) == 0:
        raise DataError(f"dataset {name!r} is empty (0 rows); columns are {cols}")

    # ---- targets
    if targets is not None:
        targets = [str(t) for t in targets]
        if not targets:
            raise DataError(f"{name}: targets is empty; name at least one loss column")
        missing = [t for t in targets if _target_column(t) not in cols]
        if missing:
            have = [c for c in cols if c.endswith("_loss") or c == "loss"]
            raise DataError(f"{name}: no loss column for target(s) {missing}; loss columns are {have}")
        lcols = [_target_column(t) for t in targets]
    else:
        if "_loss" in cols:
            raise DataError(f"{name}: column '_loss' names no target (expected <target>_loss); rename the column or drop it")
        lcols = [c for c in cols if c.endswith("_loss")]
        if "loss" in cols:
            lcols = ["loss", *lcols]
        if not lcols:
            raise DataError(f"{name}: no '<target>_loss' (or 'loss') columns; columns are {cols}")
        targets = [c if c == "loss" else c[: -len("_loss")] for c in lcols]

    # ---- domains
    if domains is not None:
        domains = [str(d) for d in domains]
        missing = [d for d in domains if f"weight_{d}" not in cols]
        if missing:
            have = [c for c in cols if c.startswith("weight_")]
            raise DataError(f"{name}: no weight column for domain(s) {missing} (expected weight_<domain>); weight columns are {have}")
        wcols = [f"weight_{d}" for d in domains]
        W = np.stack([numeric_column(df, c, name) for c in wcols], axis=1) if wcols else np.zeros((len(df), 0))
    else:
        if "weight_" in cols:
            raise DataError(f"{name}: column 'weight_' names no domain (expected weight_<domain>); rename the column or drop it")
        wcols = [c for c in cols if c.startswith("weight_")]
        W = np.stack([numeric_column(df, c, name) for c in wcols], axis=1) if wcols else np.zeros((len(df), 0))
        _screen_weight_columns(W, wcols, name, sum_tol)
        domains = [c[len("weight_") :] for c in wcols]
    if W.shape[1]:
        zero = [c for j, c in enumerate(wcols) if np.all(W[:, j] == 0)]
        if zero:
            warnings.warn(
                f"{name}: weight column(s) {zero} are 0 in every row: those domains never appear in a training "
                "mixture, so a law cannot learn their parameters from this data",
                stacklevel=3,
            )

    return from_arrays(
        W,
        np.stack([numeric_column(df, c, name) for c in lcols], axis=1),
        numeric_column(df, "model_size", name) if "model_size" in cols else None,
        numeric_column(df, "n_tokens", name) if "n_tokens" in cols else None,
        domains=domains,
        targets=targets,
        mixture_id=df["mixture_id"].to_numpy() if "mixture_id" in cols else None,
        split=df["split"].to_numpy() if "split" in cols else None,
        name=name,
        sum_tol=sum_tol,
    )


def _screen_weight_columns(W: np.ndarray, wcols: list[str], name: str, sum_tol: float) -> None:
    """Recognized ``weight_*`` columns must look like mixture weights: values in [0, 1], rows summing to 1 with the
    other weight columns. A column that breaks the pattern is an error naming it (it may not be a domain at all)."""
    hint = "if it is not a domain weight, name the domain columns explicitly (domains= in Python, --domains on the command line)"
    for j, c in enumerate(wcols):
        v = W[:, j]
        out = np.flatnonzero(np.isfinite(v) & ((v < 0) | (v > 1)))
        if out.size:
            r = int(out[0])
            raise DataError(f"{name}: column {c!r} is not a mixture weight: row {r} is {float(v[r])!r}, outside [0, 1]; {hint}")
    if W.shape[1] < 2:
        return
    ok_rows = np.isfinite(W).all(axis=1)
    if not ok_rows.any():
        return  # every row has a missing weight: from_arrays names the first
    Wf = W[ok_rows]
    sums = Wf.sum(axis=1)
    if np.all(np.abs(sums - 1.0) <= sum_tol):
        return
    rows = np.flatnonzero(ok_rows)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    for j, c in enumerate(wcols):
        if np.any(Wf[:, j] != 0) and np.all(np.abs(sums - Wf[:, j] - 1.0) <= sum_tol):
            raise DataError(
                f"{name}: column {c!r} is not a mixture weight: the other weight columns sum to 1 without it, and "
                f"with it row {int(rows[worst])} sums to {sums[worst]:.6g}; {hint}"
            )


def read_table(path, *, name: str | None = None):
    """Read a CSV file (a path or an open text/binary file) into a pandas DataFrame, with clear errors.

    Returns ``(frame, header, name)``: the raw header names of the first line (to detect duplicates that pandas
    would rename) and a dataset name (the file's stem unless given). Errors (:class:`DataError`, naming the file):
    missing file, a directory, bytes that are not UTF-8 text, an empty file, rows that do not parse."""
    import csv

    import pandas as pd

    if hasattr(path, "read"):
        raw = path.read()
        label = name or getattr(path, "name", None) or "data"
    else:
        label = str(path)
        if not os.path.exists(path):
            raise DataError(f"no such file: {path}")
        if os.path.isdir(path):
            raise DataError(f"{path} is a directory, not a CSV file")
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
            raise DataError(f"{path} is not a regular file (a pipe, socket or device); save the table to a file first")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if isinstance(raw, bytes):
        if b"\x00" in raw:
            raise DataError(f"{label} is not a CSV text file (it contains NUL bytes)")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{label} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as a UTF-8 CSV file"
            ) from None
    else:
        text = str(raw).lstrip("\ufeff")
        if "\x00" in text:
            raise DataError(f"{label} is not a CSV text file (it contains NUL characters)")
    if not text.strip():
        raise DataError(f"{label} is empty (no header line)")
    try:
        header = next(csv.reader(io.StringIO(text)))
    except (csv.Error, StopIteration) as e:
        raise DataError(f"{label}: cannot read the header line ({e})") from None
    header = [h.strip() for h in header]
    try:
        df = pd.read_csv(io.StringIO(text), skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise DataError(f"{label}: not a readable CSV table ({msg})") from None
    df.columns = [str(c).strip() for c in df.columns]
    check_column_names(list(df.columns), label, header)
    if name is None:
        base = os.path.basename(label)
        name = base[:-4] if base.lower().endswith(".csv") else (base or "data")
    return df, header, name


def load_csv(
    path,
    *,
    name: str | None = None,
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    sum_tol: float = MIXTURE_SUM_TOL,
) -> MixtureData:
    """Load a wide-layout CSV file (a path or an open file; see :func:`from_dataframe` for the columns and
    :func:`read_table` for the file errors)."""
    df, header, name = read_table(path, name=name)
    return from_dataframe(df, name=name, domains=domains, targets=targets, sum_tol=sum_tol, header=header)


# --------------------------------------------------------------------------- bundled data
_BUNDLED = {
    "slimpajama7": ("slimpajama7_mixtures.csv", "SlimPajama 7 domains, 61 mixtures, 122M-2.718B params, 11 checkpoints each (Dai & Zheng 2026)"),
    "pile4": ("pile4_mixtures.csv", "Pile 4 domains, 40 mixtures, 90M/200M/440M params, 3B-8B tokens (Dai & Zheng 2026)"),
    "pile17_regmix1b": ("pile17_regmix1b.csv", "Pile 17 domains, 62 RegMix 1B-param runs at 25B tokens (Liu et al. 2024)"),
    "pile17_regmix1m": ("pile17_regmix1m.csv", "Pile 17 domains, 768 RegMix 1M-param proxy runs, 13 loss columns, train/test split (Liu et al. 2024)"),
    "chinchilla": ("chinchilla_svg245.csv", "245 Chinchilla runs reconstructed by Besiroglu et al. 2024 (single domain; no mixture)"),
}


#: Bundled swarm tables (other layouts), loaded by :func:`mixjax.swarm.load_swarm`.
SWARM_BUNDLED = {
    "marin2phase": "Marin two-phase swarm: 39 domains x 2 phases (shares 0.8/0.2), 193 runs of 60M params at 1.2B tokens; target eval/uncheatable_eval/bpb",
    "olmix64": "Olmix swarm: 64 domains, 512 runs of 30M-param models; target the mean of 110 task BPB metrics",
    "olmix22": "Olmix reuse swarm: 22 domains, 64 runs of 30M-param models; target the mean of 110 task BPB metrics",
}


def list_datasets() -> dict[str, str]:
    """Names of the bundled datasets with a one-line description (sources in ``mixjax/datasets/README.md``)."""
    return {**{k: v[1] for k, v in _BUNDLED.items()}, **SWARM_BUNDLED}


def _bundled_text(filename: str) -> str:
    return importlib.resources.files("mixjax").joinpath("datasets", filename).read_text()


def load_dataset(name: str) -> MixtureData:
    """Load a bundled dataset by name (see :func:`list_datasets`).

    ``chinchilla`` has no mixture: it loads as one domain named ``all`` with weight 1 and target ``all``. The swarm
    tables (``marin2phase``, ``olmix64``, ``olmix22``) load with :func:`mixjax.swarm.load_swarm`'s defaults."""
    if name in SWARM_BUNDLED:
        from .swarm import load_swarm

        return load_swarm(name)
    if name not in _BUNDLED:
        raise DataError(f"unknown dataset {name!r}; bundled: {sorted(list_datasets())}")
    import pandas as pd

    df = pd.read_csv(io.StringIO(_bundled_text(_BUNDLED[name][0])))
    if name == "chinchilla":
        df = pd.DataFrame(
            {"weight_all": 1.0, "model_size": df["model_size"], "n_tokens": df["n_tokens"], "all_loss": df["loss"]}
        )
    with warnings.catch_warnings():
        # the RegMix tables are rounded at the source (rows sum to 1 within 0.004); renormalizing is documented
        if name.startswith("pile"):
            warnings.simplefilter("ignore")
        return from_dataframe(df, name=name)
