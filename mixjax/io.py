"""Saved fits: one file that reloads a :class:`mixjax.Fit` bit for bit.

File layout (format version 1). A fit file is a ZIP archive (stored, no compression) with these members:

* ``header.json``: UTF-8 JSON object::

      {"format": "mixjax.fit", "format_version": 1, "mixjax_version": "0.1.0", "jax_version": "...",
       "law": "capacity_noise",               # law.name, looked up in mixjax.LAWS on load
       "law_class": "mixjax.laws.capacity_noise.CapacityNoiseLaw",   # for error messages only
       "static": {"h_floor": 0.0001},         # the law's static (non-parameter) fields
       "summary": {...},                      # DataSummary with the fit's sizes (K, V) and scale ranges (not its
                                              # losses): only used to build a structure template with law.init
       "config": {...},                       # FitConfig fields (objective, optimizer, max_steps, dtype, ...)
       "info": {...},                         # Fit.info: data selection, seed, init scheme, domains, targets, units
       "loss": 0.00171, "status": "max_steps", "num_steps": 200,
       "members": {"law": {"leaves": [[shape, dtype, field], ...]},    # one entry per array member below
                   "starts": {"leaves": [...], "size": 16},
                   "ensemble": {"leaves": [...], "size": 200}}}      # ensemble only when one was saved

* ``law.eqx``: the best law's leaves, written by :func:`equinox.tree_serialise_leaves` (``np.save`` records);
* ``starts.eqx``: the :class:`mixjax.FitResult` of every start (batched laws, objectives, status, steps);
* ``ensemble.eqx`` (optional): a batched law with leading axis R (for example bootstrap refits).

Loading builds a template of the right structure from ``law.init`` on the saved summary (through
``equinox.filter_eval_shape``, so nothing is computed), gives every leaf the saved shape and dtype, and reads the
leaves back. Array values are stored exactly (``np.save``); floats in the header are written with Python's
shortest round-trip ``repr``. Loading a float64 fit needs ``jax_enable_x64`` (mixjax's default). Time stamps in
the archive are fixed, so the same fit always gives the same bytes. The suggested extension is ``.mixfit``; any
zip tool lists the members (``python -m zipfile -l fit.mixfit``).

Example::

    fit = mixjax.fit("capacity_noise", data)
    mixjax.save_fit("run.mixfit", fit)                 # optionally ensemble=<batched law, leading axis R>
    same = mixjax.load_fit("run.mixfit")               # same.law leaves == fit.law leaves, exactly
    ens = mixjax.load_ensemble("run.mixfit")           # None when no ensemble was saved
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .fit import Fit, FitConfig, FitResult
from .laws import AbstractLaw, DataSummary, get_law
from .results import Status

__all__ = ["save_fit", "load_fit", "load_ensemble", "read_header", "FitFileError", "FORMAT_VERSION"]

FORMAT = "mixjax.fit"
#: Version of the file layout written by :func:`save_fit`; :func:`load_fit` reads versions up to this one.
FORMAT_VERSION = 1
_EPOCH = (1980, 1, 1, 0, 0, 0)


class FitFileError(ValueError):
    """A fit file that cannot be read: not a fit file, a newer format, or a law this installation lacks."""


# --------------------------------------------------------------------------- JSON helpers
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


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
    N = scales[:, 0] / 1e6
    D = scales[:, 1] / 1e9

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
    if not isinstance(fit, Fit):
        raise TypeError(f"fit must be a mixjax.Fit, got {type(fit).__name__}")
    missing = [k for k in ("law", "domains", "targets") if k not in fit.info]
    if missing:
        raise ValueError(f"fit.info lacks {missing}; a saved fit records its law name, domains and targets (as mixjax.fit does)")
    law = fit.law
    cls = type(law)
    try:
        registered = get_law(cls.name)
    except ValueError:
        registered = None
    if registered is not cls:
        raise FitFileError(f"law class {cls.__qualname__} is not registered under its name {cls.name!r}; call mixjax.register({cls.__name__}) first")
    members: dict[str, dict] = {"law": {"leaves": _leaf_specs(law)}}
    blobs = {"law.eqx": _serialise(law)}
    B = int(np.shape(fit.starts.loss)[0]) if np.ndim(fit.starts.loss) else 1
    members["starts"] = {"leaves": _leaf_specs(fit.starts), "size": B}
    blobs["starts.eqx"] = _serialise(fit.starts)
    if ensemble is not None:
        if type(ensemble) is not cls:
            raise TypeError(f"ensemble must be a batched {cls.__name__}, got {type(ensemble).__name__}")
        lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(ensemble)}
        ref = {tuple(np.shape(x)) for x in jax.tree_util.tree_leaves(law)}
        got = {tuple(np.shape(x))[1:] for x in jax.tree_util.tree_leaves(ensemble)}
        if len(lead) != 1 or None in lead or got != ref:
            raise ValueError("ensemble must be the fitted law's class with one extra leading axis R on every parameter array")
        members["ensemble"] = {"leaves": _leaf_specs(ensemble), "size": int(lead.pop())}
        blobs["ensemble.eqx"] = _serialise(ensemble)
    import mixjax

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mixjax_version": mixjax.__version__,
        "jax_version": jax.__version__,
        "law": cls.name,
        "law_class": f"{cls.__module__}.{cls.__qualname__}",
        "static": {k: _encode_static(v) for k, v in _static_fields(law).items()},
        "summary": _summary_to_json(_summary_for(fit.info, law)),
        "config": dataclasses.asdict(fit.config),
        "info": _jsonable(fit.info),
        "loss": float(fit.loss),
        "status": Status(fit.status).name,
        "num_steps": int(fit.num_steps),
        "members": members,
    }
    text = json.dumps(header, indent=1)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, blob in {"header.json": text.encode("utf-8"), **blobs}.items():
            z.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), blob)  # fixed time stamps: same fit, same bytes


# --------------------------------------------------------------------------- load
def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a fit file (checked: a mixjax fit file of a format this version reads)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such fit file: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            header = json.loads(z.read("header.json").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError):
        raise FitFileError(f"{path} is not a mixjax fit file (expected a zip archive with header.json; write one with mixjax.save_fit)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FitFileError(f"{path} is not a mixjax fit file (header format {header.get('format') if isinstance(header, dict) else None!r}, expected {FORMAT!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FitFileError(
            f"{path} has fit-file format version {version}, written by mixjax {header.get('mixjax_version')}; this "
            f"mixjax reads versions up to {FORMAT_VERSION}: upgrade mixjax to load it"
        )
    return header


def _law_class(header: dict, path) -> type[AbstractLaw]:
    try:
        return get_law(header["law"])
    except ValueError as e:
        raise FitFileError(
            f"{path} holds a fit of law {header['law']!r} ({header.get('law_class')}), which is not registered here "
            f"({e}); import the module that defines it and mixjax.register the class"
        ) from None


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
        return cls.init(key, summary)

    if batch is None:
        shape_tree = eqx.filter_eval_shape(make, jax.random.PRNGKey(0))
    else:
        shape_tree = eqx.filter_eval_shape(jax.vmap(make), jax.random.split(jax.random.PRNGKey(0), batch))
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


def _read(z: zipfile.ZipFile, name: str, like):
    return eqx.tree_deserialise_leaves(io.BytesIO(z.read(name)), like)


def _check_dtypes(spec: dict, path) -> None:
    if not jax.config.jax_enable_x64 and any(s[1].endswith("64") and s[1].startswith(("float", "int")) for s in spec["leaves"]):
        raise FitFileError(f"{path} holds 64-bit arrays; enable jax_enable_x64 (unset MIXJAX_X64=0) to load it exactly")


def load_fit(path: str | os.PathLike) -> Fit:
    """Read a fit written by :func:`save_fit`; every array is restored exactly (same values, shapes, dtypes)."""
    header = read_header(path)
    cls = _law_class(header, path)
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
    starts_like = FitResult(starts_law, *scalars)
    with zipfile.ZipFile(path) as z:
        law = _read(z, "law.eqx", law_like)
        starts = _read(z, "starts.eqx", starts_like)
    try:
        config = FitConfig(**header["config"])
    except TypeError as e:
        raise FitFileError(f"{path}: fit settings do not match this mixjax's FitConfig ({e})") from None
    return Fit(
        law=law, loss=float(header["loss"]), status=Status[header["status"]], num_steps=int(header["num_steps"]),
        starts=starts, config=config, info=header["info"],
    )


def load_ensemble(path: str | os.PathLike) -> AbstractLaw | None:
    """The batched ensemble law saved with the fit (leading axis R), or None when the file has none."""
    header = read_header(path)
    spec = header["members"].get("ensemble")
    if spec is None:
        return None
    cls = _law_class(header, path)
    _check_dtypes(spec, path)
    static = {k: _decode_static(v) for k, v in header["static"].items()}
    like = _template(cls, _summary_from_json(header["summary"]), static, spec, spec["size"], "ensemble", path)
    with zipfile.ZipFile(path) as z:
        return _read(z, "ensemble.eqx", like)
