"""Saved fits: one file that reloads a :class:`mixjax.Fit` bit for bit.

File layout (format version 3). A fit file is a ZIP archive (stored, no compression) with these members:

* ``header.json``: UTF-8 JSON object::

      {"format": "mixjax.fit", "format_version": 3, "mixjax_version": "0.1.0", "jax_version": "...",
       "law": "capacity_noise",               # law.name, looked up in mixjax.LAWS on load
       "law_class": "mixjax.laws.capacity_noise.CapacityNoiseLaw",   # for error messages only
       "static": {"h_floor": 0.0001},         # the law's static (non-parameter) fields
       "binding": {...},                      # only for a law bound to its table's layout (see below)
       "summary": {...},                      # DataSummary with the fit's sizes (K, V) and scale ranges (not its
                                              # losses): only used to build a structure template with law.init
       "config": {...},                       # FitConfig fields (objective, optimizer, max_steps, dtype, ...)
       "info": {...},                         # Fit.record: data selection, seed, init scheme, domains, targets, units
       "loss": 0.00171, "status": "max_steps", "num_steps": 200,
       "members": {"law": {"leaves": [[shape, dtype, field], ...]},    # one entry per array member below
                   "starts": {"leaves": [...], "size": 16},
                   "ensemble": {"leaves": [...], "size": 200}},      # ensemble only when one was saved
       "checksums": {"law.eqx": "<sha256 hex>", "starts.eqx": ..., "ensemble.eqx": ...}}

* ``header.sha256``: the sha256 of the exact bytes of ``header.json``, as one ``sha256sum`` line
  (``<hex>  header.json``), so the header (and through its ``checksums`` every member) is covered;
* ``law.eqx``: the best law's leaves, written by :func:`equinox.tree_serialise_leaves` (``np.save`` records);
* ``starts.eqx``: the :class:`mixjax.Solution` of every start (batched laws, objectives, status, steps);
* ``ensemble.eqx`` (optional): a batched law with leading axis R (for example bootstrap refits).

A law bound to its table's layout by :meth:`mixjax.laws.AbstractLaw.for_data` (the ``exposure`` laws on a
swarm table) is saved under its registered name with a ``"binding"`` header entry, the bound class's
``binding()``: for the exposure laws ``{"phases": [...] | null, "phase_shares": [...] | null, "base_domains":
[...] | null, "phase_columns": [[...], ...], "unique_tokens_b": [...] | null}`` (floats written round-trip exact).
Loading rebuilds the same bound class with the registered class's ``from_binding`` (checked against the fit's
domains), so the reloaded fit predicts exactly as the saved one. Files without the entry load as before; a reader
that predates it refuses such a file (the bound law's parameter shapes are not the registered class's).

A saved bootstrap (:func:`save_bootstrap`, ``BootstrapResult.save``, ``mixjax bootstrap --save``) is the same
kind of file: its full-data fit, its resample laws as the ensemble, plus ``bootstrap.eqx`` (per-resample objectives
and statuses, row weights, jackknife units and statuses), ``jackknife.eqx`` (leave-one-out laws, once computed) and
a ``"bootstrap"`` header section (seed, scheme, interval level and method, data summary, settings). Whatever reads
a fit file reads a bootstrap file as a fit with an ensemble.

``info`` holds no wall-clock time (it would change the bytes of the same fit). The members are written in this
order with fixed time stamps, so the same fit always gives the same bytes; the file is written to a temporary name
and moved into place (:func:`mixjax._paths.atomic_write`: a missing folder, a directory, a device or a FIFO is an
:class:`~mixjax._paths.OutputPathError`, and a failed save leaves ``path`` as it was).

Loading verifies before it trusts: the header's sha256, then, before any member is read or any array allocated,
that every member is stored (not compressed) and no larger than its leaf list allows (``header.json`` at most
16 MiB; an array member at most its arrays' bytes plus a small allowance per ``np.save`` record, and at least
its arrays' bytes), then the sha256 of every member, each record's shape and dtype against the header before it
is read, a dtype consistent with the fit's settings, and finite parameters of the fitted law. A damaged or edited
file is a :class:`FitFileError` naming the file and what is wrong, never a traceback, a NaN prediction or a huge
allocation.

Older files still load: version 2 files have member checksums but no ``header.sha256`` (their header is not
covered), version 1 files have no checksums at all. A ``header.sha256`` member is verified whatever version the
header claims, so a version 3 file relabelled as an older one is refused too; member checksums found in a header
are verified whatever its version (and must then cover every member). A version 1 file without checksums cannot be
verified at all: its members are only checked for size, record layout, shape, dtype and finite parameters, so a
change to its values goes unnoticed (as does a newer file relabelled as version 1 with its checksums removed).

A fit file holds ``header.json``, optionally ``header.sha256``, and exactly the ``.eqx`` members its header lists,
each once: any other member (or a repeated name) is refused. ``format_version`` must be an integer from 1 up.

Loading builds a template of the right structure from ``law.init`` on the saved summary (through
``equinox.filter_eval_shape``, so nothing is computed), gives every leaf the saved shape and dtype, and reads the
leaves back. Array values are stored exactly (``np.save``); floats in the header are written with Python's
shortest round-trip ``repr`` (non-finite values as null). Loading a float64 fit needs ``jax_enable_x64`` (the
command line turns it on). The suggested extension is ``.mixfit``; any
zip tool lists the members (``python -m zipfile -l fit.mixfit``).

Example::

    fit = mixjax.fit("capacity_noise", data)
    mixjax.save_fit("run.mixfit", fit)                 # optionally ensemble=<batched law, leading axis R>
    same = mixjax.load_fit("run.mixfit")               # same.law leaves == fit.law leaves, exactly
    ens = mixjax.load_ensemble("run.mixfit")           # None when no ensemble was saved
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import stat
import zipfile
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._paths import atomic_write
from .fitting import Fit, FitConfig
from .laws import AbstractLaw, DataSummary, get_law
from .results import BootstrapRecord, FitRecord, Solution, Status
from .units import model_size_to_law, tokens_to_law

__all__ = ["FORMAT_VERSION", "FitFileError", "load_bootstrap", "load_ensemble", "load_fit", "read_header", "save_bootstrap", "save_fit"]

FORMAT = "mixjax.fit"
#: Version of the file layout written by :func:`save_fit`; :func:`load_fit` reads versions up to this one.
FORMAT_VERSION = 3
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: The member holding the sha256 of ``header.json`` (format version 3 on).
HEADER_SUM = "header.sha256"
_MAX_HEADER_BYTES = 16 * 2**20
_MAX_SUM_BYTES = 4096
#: Bytes an ``np.save`` record may add to its array's data: a 128-byte header, plus room for long shapes.
_RECORD_BYTES = 256
_RECORD_BYTES_PER_DIM = 32


class FitFileError(ValueError):
    """A fit file that cannot be read: not a fit file, a newer format, a law this installation lacks, or a damaged or
    edited file (checksum, shape, dtype or non-finite parameter)."""


# --------------------------------------------------------------------------- JSON helpers
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, float):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return repr(x)


def _without_timings(info: dict) -> dict:
    """``info`` without wall-clock entries (``seconds``, ``*_seconds``...): they would change the bytes of the same
    fit from run to run."""
    return {k: v for k, v in info.items() if "seconds" not in str(k) and str(k) not in ("time", "timestamp", "date")}


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _nonfinite_fields(tree) -> list[str]:
    """Paths of floating-point leaves holding a NaN or an infinity."""
    bad = []
    for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(x)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            bad.append(jax.tree_util.keystr(k))
    return bad


def _static_fields(law: AbstractLaw) -> dict[str, Any]:
    return {f.name: getattr(law, f.name) for f in dataclasses.fields(law) if f.metadata.get("static", False)}


def _encode_static(v: Any) -> Any:
    if isinstance(v, tuple):
        return {"__tuple__": [_encode_static(x) for x in v]}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    raise TypeError(f"static field value {v!r} of type {type(v).__name__} cannot be saved (ints, floats, strings, tuples only)")


def _decode_static(v: Any) -> Any:
    if isinstance(v, dict) and "__tuple__" in v:
        return tuple(_decode_static(x) for x in v["__tuple__"])
    return v


def _leaf_specs(tree) -> list:
    """``[shape, dtype, path]`` of every leaf, in flattening order (path: the field, e.g. ``.law.log_c``)."""
    return [[list(np.shape(x)), str(np.asarray(x).dtype), jax.tree_util.keystr(k)] for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _summary_for(fit_info: dict, law: AbstractLaw) -> DataSummary:
    """A summary with the fit's sizes (domains, targets) and scale ranges; only the template's structure matters."""
    K = len(fit_info["domains"])
    V = len(fit_info["targets"])
    scales = np.asarray(fit_info.get("scales") or [[np.nan, np.nan]], float).reshape(-1, 2)
    N = model_size_to_law(scales[:, 0])
    D = tokens_to_law(scales[:, 1])

    def rng(v):
        v = v[np.isfinite(v)]
        return (float(np.median(v)), (float(v.min()), float(v.max()))) if v.size else (float("nan"), (float("nan"),) * 2)

    n_ref, n_rng = rng(N)
    d_ref, d_rng = rng(D)
    return DataSummary(
        n_domains=K, n_targets=V, loss_min=np.full(V, 2.0), loss_max=np.full(V, 4.0), loss_mean=np.full(V, 3.0),
        model_size_ref=n_ref, n_tokens_ref=d_ref, model_size_range=n_rng, n_tokens_range=d_rng,
    )


def _summary_to_json(s: DataSummary) -> dict:
    return _jsonable(dataclasses.asdict(s))


def _summary_from_json(d: dict) -> DataSummary:
    d = dict(d)
    for k in ("loss_min", "loss_max", "loss_mean"):
        d[k] = np.asarray(d[k], float)
    for k in ("model_size_range", "n_tokens_range"):
        d[k] = tuple(float("nan") if v is None else float(v) for v in d[k])
    for k in ("model_size_ref", "n_tokens_ref"):
        d[k] = float("nan") if d[k] is None else float(d[k])
    return DataSummary(**d)


def _serialise(tree) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    return buf.getvalue()


# --------------------------------------------------------------------------- save
def save_fit(path: str | os.PathLike, fit: Fit, *, ensemble: AbstractLaw | None = None) -> None:
    """Write ``fit`` (and optionally an ``ensemble``: the same law class batched along a leading axis R, for
    example bootstrap refits) to one file at ``path`` (layout in the module docstring). Overwrites ``path``."""
    header, blobs = _fit_members(fit, ensemble)
    _write_fit_file(path, header, blobs)


def _fit_members(fit: Fit, ensemble: AbstractLaw | None, registered_only: bool = True) -> tuple[dict, dict[str, bytes]]:
    """The header and the member blobs of a fit file (checked: finite parameters, and with ``registered_only`` a
    law registered under its name, which :func:`load_fit` needs to find its class)."""
    if not isinstance(fit, Fit):
        raise TypeError(f"fit must be a mixjax.Fit, got {type(fit).__name__}")
    if not fit.record.domains and not fit.record.targets:
        raise ValueError("fit.record has no domains and no targets; a saved fit records its law name, domains and targets (as mixjax.fit does)")
    custom = [f"{k} {type(v).__name__}" for k, v in (("objective", fit.config.objective), ("optimizer", fit.config.optimizer))
              if not isinstance(v, str)]
    if custom:
        raise FitFileError(f"cannot save a fit made with a user's {' and '.join(custom)}: fit files record objectives and "
                           "solvers by name (mse, relative, huber_log; lbfgs, lm, adam)")
    law = fit.law
    cls = type(law)
    bad = _nonfinite_fields(law)
    if bad:
        raise ValueError(f"cannot save a fit whose law has non-finite parameters ({', '.join(bad)}); it could not be trusted on load")
    try:
        registered = get_law(cls.name)
    except ValueError:
        registered = None
    binding = _binding_of(cls, fit.info["domains"])
    bound_registered = binding is not None and registered is not None and issubclass(cls, registered)
    if registered_only and registered is not cls and not bound_registered:
        raise FitFileError(f"law class {cls.__qualname__} is not registered under its name {cls.name!r}; call mixjax.register({cls.__name__}) first")
    members: dict[str, dict] = {"law": {"leaves": _leaf_specs(law)}}
    blobs = {"law.eqx": _serialise(law)}
    starts = dataclasses.replace(fit.starts, num_accepted=None)  # a fit's members keep no accepted-step counts
    B = int(np.shape(starts.value)[0]) if np.ndim(starts.value) else 1
    members["starts"] = {"leaves": _starts_specs(starts), "size": B}
    blobs["starts.eqx"] = _serialise(starts)
    if ensemble is not None:
        members["ensemble"], blobs["ensemble.eqx"] = _batched_law_member(ensemble, law, "ensemble")
    import mixjax

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mixjax_version": mixjax.__version__,
        "jax_version": jax.__version__,
        "law": cls.name,
        "law_class": f"{cls.__module__}.{cls.__qualname__}",
        **({"law_revision": int(cls.revision)} if cls.revision else {}),
        "static": {k: _encode_static(v) for k, v in _static_fields(law).items()},
        **({"binding": binding} if binding is not None else {}),
        "summary": _summary_to_json(_summary_for(fit.info, law)),
        "config": dataclasses.asdict(fit.config),
        "info": _jsonable(_without_timings(fit.info)),
        "loss": _jsonable(float(fit.loss)),
        "status": Status(fit.status).name,
        "num_steps": int(fit.num_steps),
        "members": members,
    }
    return header, blobs


def _binding_of(cls: type, domains) -> dict | None:
    """The binding of a law class bound to its table's layout (``cls.binding()``), checked to rebuild ``cls``
    itself (``cls.from_binding``); None for a class that is not bound."""
    describe = getattr(cls, "binding", None)
    binding = describe() if describe is not None else None
    if binding is None:
        return None
    rebuilt = cls.from_binding(json.loads(json.dumps(_jsonable(binding), allow_nan=False)), list(domains))
    if rebuilt is not cls:
        raise FitFileError(f"law class {cls.__qualname__} ({cls.name!r}) is bound to a table, but its binding does not rebuild it; "
                           "a fit of it could not be reloaded")
    return _jsonable(binding)


#: The names a fit file gives the fields of its starts (the names a fit's members are read by, :class:`mixjax.Solution`).
_STARTS_FIELDS = {".y": ".law", ".value": ".loss", ".rel_grad": ".grad_norm"}


def _starts_specs(starts: Solution) -> list:
    """The leaf specs of a fit's starts, each field under its fit-file name (``.law[...]``, ``.loss``, ``.status``,
    ``.num_steps``, ``.grad_norm``)."""
    out = []
    for shape, dtype, name in _leaf_specs(starts):
        head = next((k for k in _STARTS_FIELDS if name == k or name.startswith(k + ".") or name.startswith(k + "[")), None)
        out.append([shape, dtype, name if head is None else _STARTS_FIELDS[head] + name[len(head):]])
    return out


def _batched_law_member(batched: AbstractLaw, law: AbstractLaw, what: str) -> tuple[dict, bytes]:
    """Header entry and blob of a batched law (``law``'s class, one leading axis on every parameter array)."""
    if type(batched) is not type(law):
        raise TypeError(f"{what} must be a batched {type(law).__name__}, got {type(batched).__name__}")
    lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(batched)}
    ref = {tuple(np.shape(x)) for x in jax.tree_util.tree_leaves(law)}
    got = {tuple(np.shape(x))[1:] for x in jax.tree_util.tree_leaves(batched)}
    if len(lead) != 1 or None in lead or got != ref:
        raise ValueError(f"{what} must be the fitted law's class with one extra leading axis R on every parameter array")
    return {"leaves": _leaf_specs(batched), "size": int(lead.pop())}, _serialise(batched)


def _header_sum(header_bytes: bytes) -> bytes:
    """The ``header.sha256`` member for these exact header bytes (a ``sha256sum`` line)."""
    return f"{_sha256(header_bytes)}  header.json\n".encode("ascii")


def _write_fit_file(path, header: dict, blobs: dict[str, bytes]) -> None:
    """Add the members' checksums to ``header`` and write the archive: the header and its checksum, then the
    members."""
    header = dict(header, checksums={name: _sha256(blob) for name, blob in blobs.items()})
    text = json.dumps(header, indent=1, allow_nan=False).encode("utf-8")
    write_archive(path, {"header.json": text, HEADER_SUM: _header_sum(text), **blobs})


# --------------------------------------------------------------------------- bootstrap results
#: The arrays a ``bootstrap.eqx`` member may hold (stored as a dict, so in sorted key order).
_BOOTSTRAP_ARRAYS = ("grad_norm", "jackknife_status", "loss", "num_steps", "status", "units", "weights")


def save_bootstrap(path: str | os.PathLike, result) -> None:
    """Write a :class:`mixjax.BootstrapResult` as a fit file: the full-data fit (``law.eqx``, ``starts.eqx``), the
    resample laws as its ensemble (``ensemble.eqx``), the member ``bootstrap.eqx`` (per-resample objectives and
    statuses, row weights ``(R, n)``, jackknife units, and jackknife statuses when computed), the jackknife laws
    (``jackknife.eqx``) when computed, and a ``bootstrap`` header section (seed, scheme, interval defaults, data
    summary, settings). Every reader of fit files reads it (``mixjax predict`` uses the ensemble for intervals);
    :func:`load_bootstrap` restores the whole result bit for bit. A law that is not registered is saved too;
    loading it then needs its class (``load_bootstrap(path, law=cls)``)."""
    header, blobs = _fit_members(result.point, result.laws, registered_only=False)
    arrays = {"loss": result.loss, "status": result.status, "num_steps": result.resamples.num_steps,
              "grad_norm": result.resamples.grad_norm, "weights": result.weights, "units": result.units}
    if result.jackknife_laws is not None:
        arrays["jackknife_status"] = result.jackknife_status
        header["members"]["jackknife"], blobs["jackknife.eqx"] = _batched_law_member(result.jackknife_laws, result.point.law, "jackknife laws")
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    header["members"]["bootstrap"] = {"leaves": _leaf_specs(arrays), "size": int(result.status.shape[0])}
    blobs["bootstrap.eqx"] = _serialise(arrays)
    record = result.record
    header["bootstrap"] = {
        "seed": int(result.seed), "scheme": result.scheme, "level": float(result.level), "method": result.method,
        "arrays": sorted(arrays), "summary": _summary_to_json(record.summary), "info": _jsonable(_without_timings(record.as_dict())),
    }
    _write_fit_file(path, header, blobs)


def load_bootstrap(path: str | os.PathLike, law: type[AbstractLaw] | None = None) -> dict:
    """The parts of a bootstrap saved by :func:`save_bootstrap`, as keyword arguments of
    :class:`mixjax.BootstrapResult`. ``law``: the law class, needed only when it is not registered."""
    header = read_header(path)
    section = header.get("bootstrap")
    if not isinstance(section, dict) or "bootstrap" not in header["members"]:
        raise FitFileError(f"{path} is a fit file without a bootstrap (write one with BootstrapResult.save or mixjax bootstrap --save)")
    with _damaged(path):
        cls = _law_class(header, path, law)
        point = _load_fit(path, header, cls)
        laws = _load_ensemble(path, header, cls)
        spec = header["members"]["bootstrap"]
        if [s[2] for s in spec["leaves"]] != [f"['{k}']" for k in section["arrays"]] or not set(section["arrays"]) <= set(_BOOTSTRAP_ARRAYS):
            raise FitFileError(f"{path}: the bootstrap member does not hold the arrays its header lists")
        like = {k: np.zeros(tuple(s[0]), np.dtype(s[1])) for k, s in zip(section["arrays"], spec["leaves"])}
        arrays = _read(path, header, "bootstrap.eqx", like)
        jack = None
        if "jackknife" in header["members"]:
            jack = _load_batched(path, header, cls, "jackknife")
        record = BootstrapRecord.from_dict(section["info"], summary=_summary_from_json(section["summary"]))
        R = arrays["status"].shape[0]
        # files written before the steps and gradient norms were saved: -1 steps and a NaN norm mean "not recorded"
        steps = arrays.get("num_steps", np.full(R, -1, np.int32))
        grad = arrays.get("grad_norm", np.full(R, np.nan, arrays["loss"].dtype))
        resamples = Solution(laws, *(jnp.asarray(arrays[k]) for k in ("loss", "status")), jnp.asarray(steps), jnp.asarray(grad))
        return {
            "resamples": resamples, "weights": arrays["weights"], "point": point,
            "seed": int(section["seed"]), "scheme": section["scheme"], "level": float(section["level"]), "method": section["method"],
            "units": arrays.get("units"), "record": record, "jackknife_laws": jack, "jackknife_status": arrays.get("jackknife_status"),
        }


def write_archive(path: str | os.PathLike, members: dict[str, bytes]) -> None:
    """A stored (uncompressed) ZIP archive of ``members`` in the given order with fixed time stamps, so that the same
    members always give the same bytes. Written by :func:`mixjax._paths.atomic_write`: a path that is a directory,
    a device or a FIFO, or whose folder is missing or not writable, is an ``OutputPathError`` and is left untouched;
    a failed save leaves ``path`` as it was."""

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for name, blob in members.items():
                z.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), blob)

    atomic_write(path, write, label="fit file")


# --------------------------------------------------------------------------- load
def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a fit file (checked: a mixjax fit file of a format this version reads, an integer
    ``format_version``, the header's checksum where the file holds one, the header's structure, and no member the
    header does not list). Version 1 files without member checksums cannot be verified beyond their structure."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such fit file: {path}")
    if os.path.isdir(path):
        raise FitFileError(f"{path} is a directory, not a mixjax fit file")
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
        raise FitFileError(f"{path} is not a regular file (a pipe, socket or device), not a mixjax fit file")
    not_fit = f"{path} is not a mixjax fit file (expected a zip archive with header.json; write one with mixjax.save_fit)"
    try:
        with zipfile.ZipFile(path) as z:
            names = [i.filename for i in z.infolist()]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise FitFileError(f"{path}: member name(s) {repeated} appear more than once; the file was edited or not written by mixjax")
            infos = {i.filename: i for i in z.infolist()}
            if "header.json" not in infos:
                raise FitFileError(not_fit)
            raw = _read_member(z, infos["header.json"], path, _MAX_HEADER_BYTES, "a fit header may hold")
            header = json.loads(raw.decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                got = header.get("format") if isinstance(header, dict) else None
                raise FitFileError(f"{path} is not a mixjax fit file (header format {got!r}, expected {FORMAT!r})")
            version = header.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool):
                raise FitFileError(
                    f"{path}: the header's format_version {version!r} is not an integer; the header is damaged or was edited"
                )
            if version < 1:
                raise FitFileError(f"{path}: the header's format_version {version} is not a version mixjax ever wrote (1 up); the header is damaged or was edited")
            if version > FORMAT_VERSION:
                raise FitFileError(
                    f"{path} has fit-file format version {version}, written by mixjax {header.get('mixjax_version')}; "
                    f"this mixjax reads versions up to {FORMAT_VERSION}: upgrade mixjax to load it"
                )
            if version >= 3 or HEADER_SUM in infos:
                _check_header_sum(z, infos, raw, path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError, RecursionError) as e:
        if isinstance(e, FitFileError):
            raise
        raise FitFileError(not_fit) from None
    _check_header(header, path)
    _check_member_names(header, infos, path)
    _check_member_sizes(header, infos, os.path.getsize(path), path)
    return header


def _check_member_names(header: dict, infos: dict, path) -> None:
    """The archive holds no member its header does not list (besides ``header.json`` and ``header.sha256``)."""
    listed = {"header.json", HEADER_SUM, *(f"{k}.eqx" for k in header["members"])}
    extra = sorted(n for n in infos if n not in listed)
    if extra:
        raise FitFileError(
            f"{path}: member(s) {extra} are not listed in the header (a fit file holds header.json, {HEADER_SUM} and the "
            "members its header lists); the file was edited or not written by mixjax"
        )


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path, most: int, why: str) -> bytes:
    """The bytes of a stored member of at most ``most`` bytes, checked on its ``ZipInfo`` before anything is read."""
    _check_stored(info, path)
    if info.file_size > most:
        raise FitFileError(f"{path}: member {info.filename} holds {info.file_size} bytes, more than the {most} {why}; refusing to read it")
    with z.open(info) as f:
        return f.read(most + 1)


def _check_stored(info: zipfile.ZipInfo, path) -> None:
    """Refuse a member that is compressed or encrypted, or whose sizes disagree: mixjax writes members stored."""
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED:
        raise FitFileError(
            f"{path}: member {name} is compressed (method {info.compress_type}, {info.compress_size} bytes inflating to "
            f"{info.file_size}); mixjax writes members uncompressed, so the file was not written by mixjax: refusing to inflate it"
        )
    if info.flag_bits & 0x1:
        raise FitFileError(f"{path}: member {name} is encrypted; the file was not written by mixjax")
    if info.compress_size != info.file_size:
        raise FitFileError(f"{path}: member {name} is stored but its sizes disagree ({info.compress_size} bytes stored, {info.file_size} listed); the file is damaged")


def _check_header_sum(z: zipfile.ZipFile, infos: dict, raw: bytes, path) -> None:
    """Compare the bytes of ``header.json`` with their sha256 in ``header.sha256``."""
    if HEADER_SUM not in infos:
        raise FitFileError(f"{path}: the header has no checksum (member {HEADER_SUM} is missing); the header was edited or the file is damaged")
    line = _read_member(z, infos[HEADER_SUM], path, _MAX_SUM_BYTES, "a checksum line may hold")
    if line.split()[:1] != [_sha256(raw).encode("ascii")]:
        raise FitFileError(f"{path}: header.json does not match its checksum ({HEADER_SUM}); the header was edited or damaged")


def _spec_bytes(spec: dict) -> tuple[int, int]:
    """The array bytes a member's leaf list implies, and the most bytes its ``np.save`` records may take."""
    data = sum(math.prod(leaf[0]) * np.dtype(leaf[1]).itemsize for leaf in spec["leaves"])
    records = sum(_RECORD_BYTES + _RECORD_BYTES_PER_DIM * len(leaf[0]) for leaf in spec["leaves"])
    return data, data + records


def _check_member_size(info: zipfile.ZipInfo, spec: dict, file_size: int, path) -> None:
    """A member's ``ZipInfo`` against its leaf list and the archive's size, before the member is read."""
    _check_stored(info, path)
    name, size = info.filename, info.file_size
    if info.header_offset + info.compress_size > file_size:
        raise FitFileError(
            f"{path}: member {name} claims {info.compress_size} bytes at offset {info.header_offset}, past the end of the "
            f"{file_size}-byte file; the file is truncated or damaged"
        )
    data, most = _spec_bytes(spec)
    if data > size:
        raise FitFileError(f"{path}: the header lists {data} bytes of arrays for member {name}, which holds {size} bytes; the file is damaged or was edited")
    if size > most:
        raise FitFileError(
            f"{path}: member {name} holds {size} bytes, more than the {most} its leaf list allows ({data} bytes of arrays "
            "plus their record headers); the file is damaged or was edited"
        )


def _check_member_sizes(header: dict, infos: dict, file_size: int, path) -> None:
    """Every member the header lists exists and has a size its leaf list allows (nothing is read yet)."""
    for key, spec in header["members"].items():
        name = f"{key}.eqx"
        if name not in infos:
            raise FitFileError(f"{path}: member {name} listed in the header is missing; the file is damaged")
        _check_member_size(infos[name], spec, file_size, path)


def _check_header(header: dict, path) -> None:
    """The header's structure (keys and types a loader relies on): an edited header is named, not a KeyError."""

    def need(cond, what):
        if not cond:
            raise FitFileError(f"{path}: the header is damaged ({what}); the file was edited or truncated")

    need(isinstance(header.get("law"), str), "no law name")
    need(isinstance(header.get("static"), dict), "no static fields")
    need(isinstance(header.get("summary"), dict), "no data summary")
    need(isinstance(header.get("config"), dict), "no fit settings")
    need(isinstance(header.get("info"), dict), "no fit info")
    info = header["info"]
    need(isinstance(info.get("domains"), list) and isinstance(info.get("targets"), list), "no domains/targets in info")
    need(header.get("status") in Status.__members__, f"unknown status {header.get('status')!r}")
    need(isinstance(header.get("num_steps"), int), "num_steps is not an integer")
    need(header.get("loss") is None or isinstance(header.get("loss"), (int, float)), "loss is not a number")
    members = header.get("members")
    need(isinstance(members, dict) and "law" in members and "starts" in members, "no member list")
    for name, spec in members.items():
        need(isinstance(spec, dict) and isinstance(spec.get("leaves"), list), f"member {name!r} has no leaf list")
        for leaf in spec["leaves"]:
            ok = isinstance(leaf, list) and len(leaf) >= 2 and isinstance(leaf[0], list) and all(_is_count(d) for d in leaf[0])
            need(ok and isinstance(leaf[1], str), f"member {name!r} has a malformed leaf {leaf!r}")
            try:
                kind = np.dtype(leaf[1]).kind
            except (TypeError, ValueError):
                kind = None
            need(kind is not None and kind in "biufc", f"member {name!r} has an unknown dtype {leaf[1]!r}")
        if name != "law":
            need(_is_count(spec.get("size")) and spec["size"] >= 1, f"member {name!r} has no batch size")
    if header["format_version"] >= 2 or header.get("checksums") is not None:  # checksums found are always used
        sums = header.get("checksums")
        need(isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values()), "no member checksums")
        for name in members:
            need(f"{name}.eqx" in sums, f"no checksum for {name}.eqx")


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _law_class(header: dict, path, given: type[AbstractLaw] | None = None) -> type[AbstractLaw]:
    """The saved law's class: ``given`` (checked against the saved name), else the registered class of that name;
    bound to the saved table layout when the header holds a ``binding``."""
    if given is not None:
        if getattr(given, "name", None) != header["law"]:
            raise FitFileError(f"{path} holds law {header['law']!r}, but the class {given.__name__} (name {getattr(given, 'name', None)!r}) was given")
        cls = given
    else:
        try:
            cls = get_law(header["law"])
        except ValueError as e:
            raise FitFileError(
                f"{path} holds a fit of law {header['law']!r} ({header.get('law_class')}), which is not registered here "
                f"({e}); import the module that defines it and mixjax.register the class"
            ) from None
    saved, now = header.get("law_revision", 0), cls.revision
    if saved != now:
        raise FitFileError(f"{path} holds a fit of law {header['law']!r} saved under revision {saved!r} of its formula; this "
                           f"version of mixjax evaluates revision {now} ({cls.revision_note or 'its formula changed'}): "
                           "refit the law rather than evaluate these parameters with another formula")
    if "binding" not in header:
        return cls
    from_binding = getattr(cls, "from_binding", None)
    if from_binding is None:
        raise FitFileError(f"{path} holds a fit of law {header['law']!r} bound to its table's layout, but the class "
                           f"{cls.__name__} has no from_binding to rebuild the binding")
    try:
        bound = from_binding(header["binding"], header["info"]["domains"])
    except (TypeError, ValueError) as e:
        raise FitFileError(f"{path}: the law's binding to its table is damaged or was edited ({' '.join(str(e).split())[:300]})") from None
    own = getattr(given, "binding", None) if given is not None else None
    if own is not None and own() is not None and bound is not given:
        raise FitFileError(f"{path} holds law {header['law']!r} bound to another table layout than the class given")
    return bound


def _with_static(law: AbstractLaw, static: dict) -> AbstractLaw:
    current = _static_fields(law)
    changes = {k: v for k, v in static.items() if current.get(k, object()) != v or type(current.get(k)) is not type(v)}
    if not changes:
        return law
    unknown = sorted(set(changes) - set(current))
    if unknown:
        raise FitFileError(f"saved static field(s) {unknown} do not exist on {type(law).__name__}")
    out = jax.tree_util.tree_map(lambda x: x, law)  # a shallow copy with the same leaves
    for k, v in changes.items():
        object.__setattr__(out, k, v)
    return out


def _template(cls, summary: DataSummary, static: dict, spec: dict, batch: int | None, what: str, path, prefix: str = ""):
    def make(key):
        if cls.has_init():
            return cls.init(key, summary)
        # a law without init(): build it from the saved field names and shapes (array fields only)
        fields = {}
        for leaf in spec["leaves"]:
            name = (leaf[2] if len(leaf) > 2 else "")[len(prefix):].lstrip(".")
            shape = tuple(leaf[0])[1:] if batch is not None else tuple(leaf[0])
            fields[name] = jnp.zeros(shape, jnp.dtype(leaf[1]))
        try:
            return cls(**fields)
        except TypeError as e:
            raise FitFileError(f"{path}: cannot rebuild {cls.__name__} from its saved fields {sorted(fields)} ({e})") from None

    if batch is None:
        shape_tree = eqx.filter_eval_shape(make, jax.random.PRNGKey(0))
    else:  # the keys too are abstract: nothing is allocated for the saved batch size
        shape_tree = eqx.filter_eval_shape(lambda key: jax.vmap(make)(jax.random.split(key, batch)), jax.random.PRNGKey(0))
    shape_tree = _with_static(shape_tree, static)
    return _fill_specs(shape_tree, spec, what, path, prefix)


def _fill_specs(tree, spec: dict, what: str, path, prefix: str = ""):
    """The template with every leaf given the saved shape and dtype, after checking that the saved fields are the
    law's fields (same names, same order, same shapes): a law whose definition changed is refused, never misread."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    saved = spec["leaves"]
    names = [prefix + jax.tree_util.keystr(k) for k, _ in flat]
    saved_names = [s[2] if len(s) > 2 else None for s in saved]
    if saved_names != names:
        raise FitFileError(
            f"{path}: the saved {what} has fields {saved_names}, but this version of the law has {names}; the law's "
            "definition changed since the fit was saved (refit, or load it with the mixjax version that wrote it)"
        )
    out = []
    for (_, leaf), (shape, dtype, name) in zip(flat, (s[:3] for s in saved)):
        if tuple(np.shape(leaf)) != tuple(shape):
            raise FitFileError(f"{path}: {what} field {name} has shape {tuple(shape)} on disk, the law expects {tuple(np.shape(leaf))}")
        out.append(jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype)))
    return jax.tree_util.tree_unflatten(treedef, out)


def _read(path, header: dict, name: str, like):
    """Member ``name`` deserialised into ``like``, after checking its size against its leaf list, its sha256 (when
    the header lists checksums: always from format 2 on, and in an older file that holds them) and that every record
    has the shape and dtype the header lists."""
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(name)
            _check_member_size(info, header["members"][name.removesuffix(".eqx")], os.path.getsize(path), path)
            with z.open(info) as f:
                blob = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as e:
        if isinstance(e, FitFileError):
            raise
        raise FitFileError(f"{path}: cannot read member {name} ({' '.join(str(e).split())}); the file is damaged") from None
    want = (header.get("checksums") or {}).get(name)
    if want is not None and _sha256(blob) != want:
        raise FitFileError(f"{path}: member {name} does not match its checksum; the file is damaged or was edited")
    _check_records(blob, like, name, path)
    try:
        out = eqx.tree_deserialise_leaves(io.BytesIO(blob), like)
    except Exception as e:  # noqa: BLE001 (numpy/equinox raise several kinds for a malformed record)
        raise FitFileError(f"{path}: member {name} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}); the file is damaged") from None
    for (k, got), want_leaf in zip(jax.tree_util.tree_flatten_with_path(out)[0], jax.tree_util.tree_leaves(like)):
        a = np.asarray(got)
        if a.shape != tuple(want_leaf.shape) or a.dtype != np.dtype(want_leaf.dtype):
            raise FitFileError(
                f"{path}: member {name} field {jax.tree_util.keystr(k)} is {a.dtype}{list(a.shape)}, the header says "
                f"{np.dtype(want_leaf.dtype)}{list(want_leaf.shape)}; the file is damaged or was edited"
            )
    return out


def _check_records(blob: bytes, like, name: str, path) -> None:
    """Walk the ``np.save`` records of ``blob``: one per leaf of ``like``, each of that leaf's shape and dtype, and
    nothing after them; so that reading the member allocates no more than the header promised."""
    f = io.BytesIO(blob)
    for k, leaf in jax.tree_util.tree_flatten_with_path(like)[0]:
        field = jax.tree_util.keystr(k)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported record version {version}")
        except (ValueError, TypeError, SyntaxError, KeyError, OverflowError, EOFError) as e:  # a malformed record header
            msg = " ".join(str(e).split())[:200]
            raise FitFileError(f"{path}: member {name} field {field} is not a readable array record ({msg}); the file is damaged or was edited") from None
        want_shape, want_dtype = tuple(np.shape(leaf)), np.dtype(leaf.dtype)
        if tuple(shape) != want_shape or dtype != want_dtype:
            raise FitFileError(
                f"{path}: member {name} field {field} is {dtype}{list(shape)}, the header says "
                f"{want_dtype}{list(want_shape)}; the file is damaged or was edited"
            )
        f.seek(math.prod(shape) * dtype.itemsize, io.SEEK_CUR)
    if f.tell() != len(blob):
        raise FitFileError(f"{path}: member {name} holds {len(blob)} bytes, but its records take {f.tell()}; the file is damaged or was edited")


def _check_dtypes(spec: dict, path) -> None:
    if not jax.config.jax_enable_x64 and any(s[1].endswith("64") and s[1].startswith(("float", "int")) for s in spec["leaves"]):
        raise FitFileError(f"{path} holds 64-bit arrays; call jax.config.update('jax_enable_x64', True) before loading it (the mixjax command line does)")


@contextlib.contextmanager
def _damaged(path):
    """Turn an error raised while interpreting a file's contents into a :class:`FitFileError` naming the file."""
    try:
        yield
    except FitFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, OverflowError) as e:
        msg = " ".join(str(e).split())[:200]
        raise FitFileError(f"{path}: the file is damaged or was edited ({type(e).__name__}: {msg})") from None


def load_fit(path: str | os.PathLike) -> Fit:
    """Read a fit written by :func:`save_fit`; every array is restored exactly (same values, shapes, dtypes).

    The file is verified first (see the module docstring): a damaged or edited file raises :class:`FitFileError`."""
    header = read_header(path)
    with _damaged(path):
        return _load_fit(path, header)


def _load_fit(path, header: dict, cls: type[AbstractLaw] | None = None) -> Fit:
    cls = cls or _law_class(header, path)
    static = {k: _decode_static(v) for k, v in header["static"].items()}
    summary = _summary_from_json(header["summary"])
    members = header["members"]
    _check_dtypes(members["law"], path)
    law_like = _template(cls, summary, static, members["law"], None, "law", path)
    B = members["starts"]["size"]
    n_law = len(members["law"]["leaves"])
    starts_law = _template(cls, summary, static, {"leaves": members["starts"]["leaves"][:n_law]}, B, "starts", path, ".law")
    rest = members["starts"]["leaves"][n_law:]
    if [r[2] if len(r) > 2 else None for r in rest] != [".loss", ".status", ".num_steps", ".grad_norm"]:
        raise FitFileError(f"{path}: the starts record does not hold .loss, .status, .num_steps, .grad_norm after the laws")
    scalars = [jax.ShapeDtypeStruct(tuple(r[0]), jnp.dtype(r[1])) for r in rest]
    starts_like = Solution(starts_law, *scalars)
    law = _read(path, header, "law.eqx", law_like)
    starts = _read(path, header, "starts.eqx", starts_like)
    try:
        config = FitConfig(**header["config"])
    except (TypeError, ValueError) as e:
        raise FitFileError(f"{path}: fit settings do not match this mixjax's FitConfig ({e})") from None
    float_dtypes = {np.asarray(x).dtype for x in jax.tree_util.tree_leaves(law) if np.asarray(x).dtype.kind == "f"}
    if float_dtypes and float_dtypes != {np.dtype(config.dtype)}:
        raise FitFileError(f"{path}: the law's arrays are {sorted(map(str, float_dtypes))}, but the fit's dtype is {config.dtype}; the file was edited")
    bad = _nonfinite_fields(law)
    if bad:
        raise FitFileError(f"{path}: the fitted law has non-finite parameters ({', '.join(bad)}); refusing to load it")
    loss = header["loss"]
    return Fit(
        law=law, loss=float("nan") if loss is None else float(loss), status=Status[header["status"]],
        num_steps=int(header["num_steps"]), starts=starts, config=config, record=FitRecord.from_dict(header["info"]),
    )


def load_ensemble(path: str | os.PathLike) -> AbstractLaw | None:
    """The batched ensemble law saved with the fit (leading axis R), or None when the file has none."""
    header = read_header(path)
    with _damaged(path):
        return _load_ensemble(path, header)


def _load_ensemble(path, header: dict, cls: type[AbstractLaw] | None = None) -> AbstractLaw | None:
    if "ensemble" not in header["members"]:
        return None
    return _load_batched(path, header, cls or _law_class(header, path), "ensemble")


def _load_batched(path, header: dict, cls: type[AbstractLaw], name: str) -> AbstractLaw:
    """The batched law stored in member ``name``."""
    spec = header["members"][name]
    _check_dtypes(spec, path)
    static = {k: _decode_static(v) for k, v in header["static"].items()}
    like = _template(cls, _summary_from_json(header["summary"]), static, spec, spec["size"], name, path)
    return _read(path, header, f"{name}.eqx", like)
