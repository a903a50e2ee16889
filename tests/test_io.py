"""Saved fits: exact round trips (every array, dtype, prediction), static fields, ensembles, custom laws, and clear
errors for files that cannot be read."""

import dataclasses
import hashlib
import json
import os
import re
import stat
import time
import tracemalloc
import warnings
import zipfile
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax
from mixjax._paths import OutputPathError
from mixjax.io import (
    FORMAT_VERSION,
    FitFileError,
    load_bootstrap,
    load_ensemble,
    load_fit,
    read_header,
    save_bootstrap,
    save_fit,
)
from mixjax.laws import DataSummary


@pytest.fixture(scope="module")
def fitted(slim122):
    with warnings.catch_warnings():  # 30 steps on purpose: a quick fit to save and load, converged or not
        warnings.filterwarnings("ignore", "the best of 2 starts of capacity_noise", mixjax.MaxStepsWarning)
        return mixjax.fit("capacity_noise", slim122, starts=2, max_steps=30, seed=3, optimizer="adam")


@pytest.fixture(scope="module")
def fitted32(fitted):
    """The same fit held in float32 (as a ``dtype="float32"`` fit would be)."""
    to32 = lambda t: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, t)
    return dataclasses.replace(fitted, law=to32(fitted.law), starts=to32(fitted.starts), config=dataclasses.replace(fitted.config, dtype="float32"))


def assert_trees_identical(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y, equal_nan=True)


def header_sum(header_bytes):
    """The ``header.sha256`` member for these header bytes (a ``sha256sum`` line)."""
    return f"{hashlib.sha256(header_bytes).hexdigest()}  header.json\n".encode()


def rewrite_header(src, dst, sign=True, **changes):
    """A copy of ``src`` with header entries changed (and the header's checksum recomputed when ``sign``)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = json.loads(members["header.json"])
    header.update(changes)
    members["header.json"] = json.dumps(header).encode()
    write_members(dst, members, sign=sign)


@pytest.mark.parametrize("which", ["fitted", "fitted32"])
def test_round_trip_is_exact(which, request, slim122, tmp_path):
    f = request.getfixturevalue(which)
    path = tmp_path / "fit.mixfit"
    save_fit(path, f)
    g = load_fit(path)
    assert_trees_identical(f.law, g.law)
    assert_trees_identical(f.starts, g.starts)
    assert g.loss == f.loss and g.status == f.status and g.num_steps == f.num_steps
    assert g.config == f.config
    # the metadata, exactly (JSON float repr round-trips), without wall-clock time (same fit, same bytes)
    assert g.info == json.loads(json.dumps({k: v for k, v in f.info.items() if "seconds" not in k}))
    assert not any("seconds" in k for k in g.info)
    assert g.info["seed"] == f.info["seed"] and g.info["domains"] == list(slim122.domains)
    p_f, p_g = f.predict(slim122), g.predict(slim122)
    assert p_g.dtype == np.dtype(f.config.dtype)
    assert np.array_equal(p_f, p_g)
    assert g.evaluate(slim122)["mre"] == f.evaluate(slim122)["mre"]
    # deterministic bytes: saving the reloaded fit gives the same file
    save_fit(tmp_path / "again.mixfit", g)
    assert (tmp_path / "again.mixfit").read_bytes() == path.read_bytes()
    h = read_header(path)
    assert h["format_version"] == FORMAT_VERSION and h["mixjax_version"] == mixjax.__version__
    assert h["law"] == "capacity_noise" and h["config"]["dtype"] == f.config.dtype


def test_static_field_is_restored(fitted, slim122, tmp_path):
    law = fitted.law
    wide = dataclasses.replace(law, h_floor=1e-2)
    f = dataclasses.replace(fitted, law=wide)
    save_fit(tmp_path / "f.mixfit", f)
    g = load_fit(tmp_path / "f.mixfit")
    assert g.law.h_floor == 1e-2
    # a zero-weight domain's noise term uses max(h, h_floor): A (D h_floor)^-a, checked in closed form
    h = np.zeros(7)
    h[2] = 1.0
    pred = np.asarray(g.law(jnp.asarray(h), jnp.asarray(122.0), jnp.asarray(9.998)))
    p = {k: np.asarray(v) for k, v in law.params().items()}
    assert np.allclose(pred - np.asarray(law(jnp.asarray(h), jnp.asarray(122.0), jnp.asarray(9.998))),
                       p["A"] * ((9.998 * 1e-2) ** -p["a"] - (9.998 * 1e-4) ** -p["a"]) * (h == 0), rtol=1e-10, atol=1e-12)


def test_ensemble_round_trip(fitted, slim122, tmp_path):
    ens = fitted.starts.law  # a batched law, leading axis R = 2
    save_fit(tmp_path / "e.mixfit", fitted, ensemble=ens)
    back = load_ensemble(tmp_path / "e.mixfit")
    assert_trees_identical(ens, back)
    h = jnp.asarray(slim122.mixtures)
    pred = lambda law: law.predict(h, 122.0, 9.998)
    assert np.array_equal(np.asarray(jax.vmap(pred)(ens)), np.asarray(jax.vmap(pred)(back)))
    assert read_header(tmp_path / "e.mixfit")["members"]["ensemble"]["size"] == 2
    save_fit(tmp_path / "plain.mixfit", fitted)
    assert load_ensemble(tmp_path / "plain.mixfit") is None
    with pytest.raises(ValueError, match="leading axis"):
        save_fit(tmp_path / "bad.mixfit", fitted, ensemble=fitted.law)


class _TwoTargetLaw(mixjax.AbstractLaw):
    """A test law with free targets (V = 2 != K) and a tuple static field: L_v = E_v + w_v . h."""

    E: jax.Array
    w: jax.Array
    tag: tuple = eqx.field(static=True, default=("a", 1))
    name: ClassVar[str] = "_test_two_target"
    per_domain: ClassVar[bool] = False

    @classmethod
    def init(cls, key, summary):
        return cls(jnp.zeros(summary.n_targets), jax.random.normal(key, (summary.n_targets, summary.n_domains)))

    def params(self):
        return {"E": self.E, "w": self.w}

    def __call__(self, mixture, model_size, n_tokens):
        return self.E + self.w @ mixture


def test_custom_law_round_trip_and_unknown_law(tmp_path):
    law = _TwoTargetLaw(jnp.array([1.5, 2.5]), jnp.arange(6.0).reshape(2, 3) / 7, tag=("b", 2))
    starts = mixjax.Solution(
        jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x]), law), jnp.array([0.1, 0.2]), jnp.array([0, 1], jnp.int32),
        jnp.array([5, 7]), jnp.array([1e-9, 2e-3]),
    )
    info = {"law": "_test_two_target", "domains": ["x", "y", "z"], "targets": ["t1", "t2"], "scales": [[1e8, 1e9]], "seed": 0}
    f = mixjax.Fit(law=law, loss=0.1, status=mixjax.Status.converged, num_steps=5, starts=starts, config=mixjax.FitConfig(), record=mixjax.FitRecord.from_dict(info))
    with pytest.raises(FitFileError, match="not registered"):
        save_fit(tmp_path / "c.mixfit", f)
    mixjax.register(_TwoTargetLaw)
    try:
        save_fit(tmp_path / "c.mixfit", f)
        g = load_fit(tmp_path / "c.mixfit")
        assert g.law.tag == ("b", 2)
        assert_trees_identical(f.law, g.law)
        assert_trees_identical(f.starts, g.starts)
        assert np.asarray(g.starts.status).dtype == np.int32
        assert np.allclose(g.law(jnp.array([0.2, 0.3, 0.5]), 1.0, 1.0), [1.5 + (0 * 0.2 + 1 * 0.3 + 2 * 0.5) / 7, 2.5 + (3 * 0.2 + 4 * 0.3 + 5 * 0.5) / 7])
    finally:
        mixjax.unregister("_test_two_target")
    with pytest.raises(FitFileError, match="_test_two_target.*not registered"):
        load_fit(tmp_path / "c.mixfit")


def test_unreadable_files(fitted, tmp_path):
    save_fit(tmp_path / "ok.mixfit", fitted)
    rewrite_header(tmp_path / "ok.mixfit", tmp_path / "new.mixfit", format_version=FORMAT_VERSION + 98)
    with pytest.raises(FitFileError, match=f"version {FORMAT_VERSION + 98}.*upgrade"):
        load_fit(tmp_path / "new.mixfit")
    rewrite_header(tmp_path / "ok.mixfit", tmp_path / "law.mixfit", law="no_such_law")
    with pytest.raises(FitFileError, match="no_such_law"):
        load_fit(tmp_path / "law.mixfit")
    # a law whose fields were renamed since the file was written is refused, not misread
    header = read_header(tmp_path / "ok.mixfit")
    members = json.loads(json.dumps(header["members"]))
    members["law"]["leaves"][0][2] = ".log_b_old"
    rewrite_header(tmp_path / "ok.mixfit", tmp_path / "renamed.mixfit", members=members)
    with pytest.raises(FitFileError, match="log_b_old.*definition changed"):
        load_fit(tmp_path / "renamed.mixfit")
    (tmp_path / "junk.mixfit").write_text("weight_a,a_loss\n1,2\n")
    with pytest.raises(FitFileError, match="not a mixjax fit file"):
        load_fit(tmp_path / "junk.mixfit")
    with pytest.raises(FileNotFoundError, match="missing.mixfit"):
        load_fit(tmp_path / "missing.mixfit")


# --------------------------------------------------------------------------- damaged and edited files
def members_of(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_members(path, members, sign=True):
    """A stored archive of ``members``; with ``sign``, ``header.sha256`` is recomputed (as a careful forger would)."""
    if sign and "header.sha256" in members:
        members = {**members, "header.sha256": header_sum(members["header.json"])}
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


def test_file_bytes_are_fixed(fitted, tmp_path):
    """Same fit, same bytes: fixed member order and time stamps, no wall-clock time, checksums of every member."""
    save_fit(tmp_path / "a.mixfit", fitted)
    later = dataclasses.replace(fitted, record=fitted.record.replace(seconds=(fitted.record.seconds or 0.0) + 123.0))
    save_fit(tmp_path / "b.mixfit", later)  # only the fit time differs
    assert (tmp_path / "a.mixfit").read_bytes() == (tmp_path / "b.mixfit").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.mixfit") as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == ["header.json", "header.sha256", "law.eqx", "starts.eqx"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    header = read_header(tmp_path / "a.mixfit")
    m = members_of(tmp_path / "a.mixfit")
    assert header["checksums"] == {n: hashlib.sha256(m[n]).hexdigest() for n in ("law.eqx", "starts.eqx")}
    assert m["header.sha256"] == hashlib.sha256(m["header.json"]).hexdigest().encode() + b"  header.json\n"
    assert list(tmp_path.iterdir()) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_flipped_byte_is_refused(fitted, tmp_path):
    save_fit(tmp_path / "ok.mixfit", fitted)
    raw = bytearray((tmp_path / "ok.mixfit").read_bytes())
    m = members_of(tmp_path / "ok.mixfit")
    start = bytes(raw).index(m["law.eqx"][-64:])  # a byte inside the law's stored values
    raw[start + 10] ^= 0xFF
    (tmp_path / "flip.mixfit").write_bytes(bytes(raw))
    with pytest.raises(FitFileError, match=r"flip\.mixfit.*law\.eqx.*damaged"):
        load_fit(tmp_path / "flip.mixfit")
    # a byte flipped in the zip structure itself
    raw = bytearray((tmp_path / "ok.mixfit").read_bytes())
    raw[0] ^= 0xFF
    (tmp_path / "flip0.mixfit").write_bytes(bytes(raw))
    with pytest.raises(FitFileError, match="not a mixjax fit file"):
        load_fit(tmp_path / "flip0.mixfit")


def test_edited_members_are_refused(fitted, tmp_path):
    save_fit(tmp_path / "ok.mixfit", fitted)
    m = members_of(tmp_path / "ok.mixfit")
    header = json.loads(m["header.json"])

    def rewrite(name, blob, fix_checksum=True):
        mm = dict(m)
        mm[name] = blob
        h = json.loads(json.dumps(header))
        if fix_checksum and name != "header.json":
            h["checksums"][name] = hashlib.sha256(blob).hexdigest()
        if name != "header.json":
            mm["header.json"] = json.dumps(h).encode()
        write_members(tmp_path / "x.mixfit", mm)
        return tmp_path / "x.mixfit"

    law = m["law.eqx"]
    # an edited .npy header (shape text changed), checksum recomputed to match: refused by the record check
    first = law.index(b"'shape': (") + len(b"'shape': (")
    edited = law[:first] + b"9" + law[first + 1 :]
    with pytest.raises(FitFileError, match="law.eqx"):
        load_fit(rewrite("law.eqx", edited))
    # the same edit without a new checksum: refused by the checksum
    with pytest.raises(FitFileError, match="does not match its checksum"):
        load_fit(rewrite("law.eqx", edited, fix_checksum=False))
    # a parameter set to NaN (checksum recomputed): refused, naming the field
    flat, treedef = jax.tree_util.tree_flatten_with_path(fitted.law)
    path0 = flat[0][0]
    leaves = [x for _, x in flat]
    leaves[0] = jnp.asarray(leaves[0]).at[0].set(jnp.nan)
    nan_law = jax.tree_util.tree_unflatten(treedef, leaves)
    import io as _io

    buf = _io.BytesIO()
    eqx.tree_serialise_leaves(buf, nan_law)
    field = jax.tree_util.keystr(path0)
    with pytest.raises(FitFileError, match=rf"non-finite parameters \({re.escape(field)}\)"):
        load_fit(rewrite("law.eqx", buf.getvalue()))
    # a changed dtype in the header's leaf list
    h = json.loads(json.dumps(header))
    h["members"]["law"]["leaves"][0][1] = "float32"
    with pytest.raises(FitFileError, match=r"x\.mixfit.*(float32|dtype)"):
        load_fit(rewrite("header.json", json.dumps(h).encode()))
    # the fit's dtype edited in its settings, arrays unchanged
    h = json.loads(json.dumps(header))
    h["config"]["dtype"] = "float32"
    with pytest.raises(FitFileError, match=r"arrays are \['float64'\], but the fit's dtype is float32"):
        load_fit(rewrite("header.json", json.dumps(h).encode()))
    # a header with a key removed
    h = json.loads(json.dumps(header))
    del h["summary"]
    with pytest.raises(FitFileError, match="header is damaged"):
        load_fit(rewrite("header.json", json.dumps(h).encode()))
    # a truncated file
    (tmp_path / "cut.mixfit").write_bytes((tmp_path / "ok.mixfit").read_bytes()[:300])
    with pytest.raises(FitFileError):
        load_fit(tmp_path / "cut.mixfit")
    with pytest.raises(FitFileError, match="is a directory"):
        load_fit(tmp_path)


def test_nonfinite_law_is_not_saved_and_failed_save_leaves_nothing(fitted, tmp_path):
    bad = dataclasses.replace(fitted, law=jax.tree_util.tree_map(lambda x: x * jnp.nan, fitted.law))
    with pytest.raises(ValueError, match="non-finite parameters"):
        save_fit(tmp_path / "nan.mixfit", bad)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the header's checksum, old formats
def test_edited_header_is_refused(fitted, tmp_path):
    """Every header edit that would change predictions (domain order, a static field, the targets) is refused."""
    save_fit(tmp_path / "ok.mixfit", fitted)
    info = read_header(tmp_path / "ok.mixfit")["info"]
    assert load_fit(tmp_path / "ok.mixfit").info["domains"] == info["domains"]
    edits = {
        "domains": {"info": {**info, "domains": info["domains"][::-1]}},
        "static": {"static": {"h_floor": 0.5}},
        "targets": {"info": {**info, "targets": info["targets"][1:] + info["targets"][:1]}},
    }
    for what, change in edits.items():
        rewrite_header(tmp_path / "ok.mixfit", tmp_path / f"{what}.mixfit", sign=False, **change)
        with pytest.raises(FitFileError, match=rf"{what}\.mixfit: header\.json does not match its checksum.*edited or damaged"):
            load_fit(tmp_path / f"{what}.mixfit")
    # the checksum removed, or the file relabelled as version 2 (which had none): refused too
    m = members_of(tmp_path / "ok.mixfit")
    write_members(tmp_path / "nosum.mixfit", {n: b for n, b in m.items() if n != "header.sha256"})
    with pytest.raises(FitFileError, match=r"nosum\.mixfit: the header has no checksum"):
        load_fit(tmp_path / "nosum.mixfit")
    rewrite_header(tmp_path / "ok.mixfit", tmp_path / "relabelled.mixfit", sign=False, format_version=2)
    with pytest.raises(FitFileError, match=r"relabelled\.mixfit: header\.json does not match its checksum"):
        load_ensemble(tmp_path / "relabelled.mixfit")


def write_old_version(path, members, version):
    """A fit file as mixjax wrote format ``version`` (1 or 2): no header checksum; no member checksums in version 1."""
    header = json.loads(members["header.json"])
    header["format_version"] = version
    if version < 2:
        del header["checksums"]
    out = {"header.json": json.dumps(header, indent=1, allow_nan=False).encode()}
    out.update((n, b) for n, b in members.items() if n.endswith(".eqx"))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for n, b in out.items():
            z.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), b)


@pytest.mark.parametrize("version", [1, 2])
def test_older_versions_still_load(version, fitted, slim122, tmp_path):
    save_fit(tmp_path / "new.mixfit", fitted, ensemble=fitted.starts.law)
    m = members_of(tmp_path / "new.mixfit")
    write_old_version(tmp_path / "old.mixfit", m, version)
    assert "header.sha256" not in members_of(tmp_path / "old.mixfit")
    g = load_fit(tmp_path / "old.mixfit")
    assert_trees_identical(fitted.law, g.law)
    assert_trees_identical(fitted.starts, g.starts)
    assert_trees_identical(fitted.starts.law, load_ensemble(tmp_path / "old.mixfit"))
    assert np.array_equal(fitted.predict(slim122), g.predict(slim122))
    assert read_header(tmp_path / "old.mixfit")["format_version"] == version
    if version == 2:  # its members are still covered by their checksums
        law = bytearray(m["law.eqx"])
        law[-1] ^= 0x01
        write_old_version(tmp_path / "flip.mixfit", {**m, "law.eqx": bytes(law)}, version)
        with pytest.raises(FitFileError, match=r"flip\.mixfit: member law\.eqx does not match its checksum"):
            load_fit(tmp_path / "flip.mixfit")


# --------------------------------------------------------------------------- sizes bounded before reading
def test_deflated_header_is_refused_without_inflating(fitted, tmp_path):
    """A header.json that inflates to 200 MB (valid JSON: spaces after the brace) is refused from its ZipInfo."""
    save_fit(tmp_path / "ok.mixfit", fitted)
    m = members_of(tmp_path / "ok.mixfit")
    pad, n_pad = b" " * 2**20, 200
    digest = hashlib.sha256(b"{")
    for _ in range(n_pad):
        digest.update(pad)
    digest.update(m["header.json"][1:])
    bomb = tmp_path / "bomb.mixfit"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("header.json", "w") as f:
            f.write(b"{")
            for _ in range(n_pad):
                f.write(pad)
            f.write(m["header.json"][1:])
        z.writestr("header.sha256", f"{digest.hexdigest()}  header.json\n")
        for n in ("law.eqx", "starts.eqx"):
            z.writestr(n, m[n])
    assert bomb.stat().st_size < 5 * 2**20
    size = n_pad * 2**20 + len(m["header.json"])
    tracemalloc.start()
    try:
        with pytest.raises(FitFileError) as e:
            load_fit(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(e.value)
    assert "\n" not in msg and "bomb.mixfit" in msg and "header.json" in msg and str(size) in msg, msg
    assert "compressed" in msg
    assert peak < 100 * 2**20, peak
    # the same bound for a stored header: at most 16 MiB are read
    big = json.dumps({**json.loads(m["header.json"]), "pad": " " * 2**24}).encode()
    write_members(tmp_path / "big.mixfit", {**m, "header.json": big})
    with pytest.raises(FitFileError, match=rf"big\.mixfit: member header\.json holds {len(big)} bytes, more than the {2**24}"):
        load_fit(tmp_path / "big.mixfit")


def tiny_bootstrap(fitted):
    """A BootstrapResult assembled from the fit's two starts (no refits)."""
    K = len(fitted.info["domains"])
    summary = DataSummary(
        n_domains=K, n_targets=K, loss_min=np.full(K, 2.0), loss_max=np.full(K, 4.0), loss_mean=np.full(K, 3.0),
        model_size_ref=122.0, n_tokens_ref=9.998, model_size_range=(122.0, 122.0), n_tokens_range=(9.998, 9.998),
    )
    return mixjax.BootstrapResult(
        resamples=fitted.starts, weights=np.ones((2, 60), np.int64), point=fitted, seed=0, scheme="rows", units=np.arange(60),
        record=mixjax.BootstrapRecord(law=fitted.record.law, summary=summary),
    )


def test_huge_leaf_specs_are_refused_before_allocating(fitted, tmp_path):
    """A (re-signed) header claiming a 1e6 x 1e6 array is refused from the member's size, quickly, allocating nothing."""
    save_fit(tmp_path / "ok.mixfit", fitted)
    save_bootstrap(tmp_path / "boot.mixfit", tiny_bootstrap(fitted))
    assert np.array_equal(load_bootstrap(tmp_path / "boot.mixfit")["weights"], np.ones((2, 60), np.int64))
    cases = []
    for src, member, field in (("ok", "law", 0), ("boot", "bootstrap", "['weights']")):
        header = read_header(tmp_path / f"{src}.mixfit")
        members = json.loads(json.dumps(header["members"]))
        leaves = members[member]["leaves"]
        i = field if isinstance(field, int) else [leaf[2] for leaf in leaves].index(field)
        leaves[i][0] = [10**6, 10**6]
        rewrite_header(tmp_path / f"{src}.mixfit", tmp_path / f"huge_{member}.mixfit", members=members)
        cases.append((tmp_path / f"huge_{member}.mixfit", f"{member}.eqx", 10**12 * np.dtype(leaves[i][1]).itemsize))
    loaders = {"law.eqx": load_fit, "bootstrap.eqx": load_bootstrap}
    for path, member, claimed in cases:
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            with pytest.raises(FitFileError) as e:
                loaders[member](path)
            seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        msg = str(e.value)
        assert re.search(rf"{path.name}: the header lists \d+ bytes of arrays for member {re.escape(member)}, which holds \d+ bytes", msg), msg
        assert int(re.search(r"lists (\d+) bytes", msg).group(1)) >= claimed  # the claimed array's 8e12 bytes, at least
        assert seconds < 5 and peak < 50 * 2**20, (seconds, peak)


def test_oversized_and_compressed_members_are_refused(fitted, tmp_path):
    save_fit(tmp_path / "ok.mixfit", fitted)
    m = members_of(tmp_path / "ok.mixfit")
    # trailing bytes after the law's records: more than its leaf list allows, refused from the ZipInfo
    write_members(tmp_path / "long.mixfit", {**m, "law.eqx": m["law.eqx"] + b"\0" * 4096})
    with pytest.raises(FitFileError, match=rf"long\.mixfit: member law\.eqx holds {len(m['law.eqx']) + 4096} bytes, more than"):
        load_fit(tmp_path / "long.mixfit")
    # a few trailing bytes fit the allowance: refused by the record walk (checksum recomputed)
    h = json.loads(m["header.json"])
    h["checksums"]["law.eqx"] = hashlib.sha256(m["law.eqx"] + b"\0" * 8).hexdigest()
    write_members(tmp_path / "tail.mixfit", {**m, "header.json": json.dumps(h).encode(), "law.eqx": m["law.eqx"] + b"\0" * 8})
    with pytest.raises(FitFileError, match=rf"tail\.mixfit: member law\.eqx holds {len(m['law.eqx']) + 8} bytes, but its records take {len(m['law.eqx'])}"):
        load_fit(tmp_path / "tail.mixfit")
    # a deflated array member (all else intact) is refused before it is inflated
    with zipfile.ZipFile(tmp_path / "zipped.mixfit", "w") as z:
        for n, b in m.items():
            z.writestr(n, b, compress_type=zipfile.ZIP_DEFLATED if n == "starts.eqx" else zipfile.ZIP_STORED)
    with pytest.raises(FitFileError, match=rf"zipped\.mixfit: member starts\.eqx is compressed .* inflating to {len(m['starts.eqx'])}"):
        load_fit(tmp_path / "zipped.mixfit")


# --------------------------------------------------------------------------- where a fit is written
def test_save_refuses_bad_targets(fitted, tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(OutputPathError) as e:
        save_fit(missing / "f.mixfit", fitted)
    assert str(missing) in str(e.value) and "does not exist" in str(e.value) and "\n" not in str(e.value)
    assert not missing.exists()
    fifo = tmp_path / "pipe.mixfit"
    os.mkfifo(fifo)
    for save in (lambda p: save_fit(p, fitted), lambda p: save_bootstrap(p, tiny_bootstrap(fitted))):
        with pytest.raises(OutputPathError, match=r"pipe\.mixfit.*FIFO"):
            save(fifo)
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(OutputPathError, match="is a directory"):
        save_fit(tmp_path, fitted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.mixfit"]  # no temporary files left


def test_saved_file_mode_follows_umask(fitted, tmp_path):
    old = os.umask(0o027)
    try:
        save_fit(tmp_path / "f.mixfit", fitted)
        save_fit(tmp_path / "f.mixfit", fitted)  # replacing an earlier save
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f.mixfit").st_mode) == 0o666 & ~0o027
    assert_trees_identical(fitted.law, load_fit(tmp_path / "f.mixfit").law)
