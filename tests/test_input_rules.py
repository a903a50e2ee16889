"""Input rules: constant loss columns, names the command line cannot give back, unnamed columns, scale columns that
mix units, and fit files with unlisted members, odd version numbers or older layouts."""

import hashlib
import io
import json
import re
import warnings
import zipfile

import jax
import numpy as np
import pandas as pd
import pytest

import mixjax
from mixjax.data import MIXED_UNITS_FACTOR, DataError
from mixjax.io import FitFileError, load_ensemble, load_fit, read_header


def table(**extra):
    """A small valid wide table (three mixtures of two domains, two targets); ``extra`` adds or replaces columns."""
    cols = {
        "weight_a": [0.2, 0.5, 0.9],
        "weight_b": [0.8, 0.5, 0.1],
        "model_size": [1e8, 1e8, 1e8],
        "n_tokens": [2e9, 2e9, 2e9],
        "x_loss": [3.1, 3.0, 2.9],
        "y_loss": [2.5, 2.6, 2.7],
    }
    cols.update(extra)
    return pd.DataFrame(cols)


def no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------- constant losses
def test_constant_loss_column_is_warned_and_all_constant_is_an_error():
    assert no_warnings(mixjax.from_dataframe, table()).targets == ("x", "y")
    with pytest.warns(UserWarning, match=r"loss column\(s\) y_loss hold one value.*constant loss") as rec:
        d = mixjax.from_dataframe(table(y_loss=[2.5, np.nan, 2.5]))
    assert d.targets == ("x", "y")
    assert not any("x_loss" in str(w.message) for w in rec)
    with pytest.raises(DataError, match=r"every loss column \(x_loss, y_loss\).*constant loss.*nothing to fit"):
        mixjax.from_dataframe(table(x_loss=[3.0] * 3, y_loss=[2.5] * 3))
    # the same rule for arrays; one measured value is not called constant
    h = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    with pytest.raises(DataError, match=r"every loss column \(c_loss\)"):
        mixjax.from_arrays(h, [[2.0], [2.0], [2.0]], 1e8, 2e9, domains=["a", "b"], targets=["c"])
    no_warnings(mixjax.from_arrays, h, [[2.0, 3.0], [np.nan, 3.1], [np.nan, 3.2]], 1e8, 2e9, domains=["a", "b"], targets=["c", "e"])


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize("bad", ["ar,xiv", "ar=xiv"])
def test_domain_names_with_separators_are_refused(bad):
    df = table().rename(columns={"weight_a": f"weight_{bad}"})
    with pytest.raises(DataError, match=rf"domain '{bad}' \(column 'weight_{bad}'\).*comma-separated name=weight"):
        mixjax.from_dataframe(df)
    with pytest.raises(DataError, match=rf"column 'weight_{bad}'"):
        mixjax.from_dataframe(df, domains=[bad, "b"])
    with pytest.raises(DataError, match=rf"domain '{bad}'"):
        mixjax.from_arrays([[0.5, 0.5], [0.2, 0.8]], [[3.0], [3.1]], domains=[bad, "b"], targets=["t"])


def test_domain_name_with_comma_in_a_csv_header_is_refused():
    text = '"weight_ar,xiv",weight_b,model_size,n_tokens,x_loss\n0.2,0.8,1e8,2e9,3.1\n0.6,0.4,1e8,2e9,3.0\n'
    with pytest.raises(DataError, match=r"column 'weight_ar,xiv'"):
        mixjax.load_csv(io.StringIO(text), name="t")
    assert no_warnings(mixjax.load_csv, io.StringIO(text.replace("ar,xiv", "arxiv")), name="t").domains == ("arxiv", "b")


def test_target_names_with_comma_are_refused():
    df = table().rename(columns={"y_loss": "y,z_loss"})
    with pytest.raises(DataError, match=r"target 'y,z' \(column 'y,z_loss'\).*comma-separated"):
        mixjax.from_dataframe(df)
    with pytest.raises(DataError, match=r"target 'y,z'"):
        mixjax.from_dataframe(df, targets=["x", "y,z"])
    assert no_warnings(mixjax.from_dataframe, df, targets=["x"]).targets == ("x",)
    # '=' in a target name is fine: target lists are plain comma-separated names
    assert no_warnings(mixjax.from_dataframe, table().rename(columns={"y_loss": "y=z_loss"})).targets == ("x", "y=z")


def test_unnamed_weight_and_loss_columns_are_refused():
    with pytest.raises(DataError, match=r"column 'weight_' names no domain") as e:
        mixjax.from_dataframe(table(weight_=[0.0, 0.0, 0.0]))
    assert "sum" not in str(e.value)
    with pytest.raises(DataError, match=r"column 'weight_' names no domain"):
        mixjax.from_arrays([[0.5, 0.5]], [[3.0]], domains=["", "b"], targets=["t"])
    with pytest.raises(DataError, match=r"column '_loss' names no target"):
        mixjax.from_dataframe(table(_loss=[1.0, 2.0, 3.0]))
    # named domains leave other weight_* columns alone, as documented
    assert no_warnings(mixjax.from_dataframe, table(weight_=[0.0, 0.0, 0.0]), domains=["a", "b"]).domains == ("a", "b")


# --------------------------------------------------------------------------- mixed units
@pytest.mark.parametrize("column", ["model_size", "n_tokens"])
def test_scale_column_mixing_units_is_warned(column):
    base = 9e7 if column == "model_size" else 9e9
    low = base / 1000
    with pytest.warns(UserWarning, match=rf"column {column} jumps from {re.escape(f'{low:.6g}')} to {re.escape(f'{base:.6g}')}.*factor of 1000.*mixed units\?"):
        mixjax.from_dataframe(table(**{column: [low, base, base]}))
    just_below = base / (MIXED_UNITS_FACTOR * 0.99)
    no_warnings(mixjax.from_dataframe, table(**{column: [just_below, base, base * 3]}))
    with pytest.warns(UserWarning, match=rf"column {column} jumps.*mixed units"):
        mixjax.from_dataframe(table(**{column: [base / MIXED_UNITS_FACTOR, base, base * 3]}))
    # wide but evenly spaced scales (122M to 2.7B, as in slimpajama7) are fine
    no_warnings(mixjax.from_dataframe, table(model_size=[1.22e8, 5.5e8, 2.718e9]))


def test_bundled_datasets_load_without_warnings():
    for name in mixjax.list_datasets():
        no_warnings(mixjax.load_dataset, name)


# --------------------------------------------------------------------------- fit files
@pytest.fixture(scope="module")
def fit_path(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # five steps do not converge; the file's contents are what matter here
        fit = mixjax.fit("loglinear", mixjax.load_dataset("pile4"), starts=1, max_steps=5, optimizer="adam")
    path = tmp_path_factory.mktemp("fits") / "ok.mixfit"
    mixjax.save_fit(path, fit)
    return path


def members_of(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_members(path, members, extra=()):
    """A stored archive of ``members`` (and the (name, bytes) pairs of ``extra``, which may repeat a name)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a repeated name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            for n, b in [*members.items(), *extra]:
                z.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), b)


def edited(members, sign=True, drop_sum=False, **changes):
    """``members`` with header entries changed (``None`` deletes one), re-signed when ``sign``."""
    header = json.loads(members["header.json"])
    for k, v in changes.items():
        if v is None:
            header.pop(k, None)
        else:
            header[k] = v
    out = dict(members, **{"header.json": json.dumps(header).encode()})
    if sign:
        out["header.sha256"] = f"{hashlib.sha256(out['header.json']).hexdigest()}  header.json\n".encode()
    if drop_sum:
        del out["header.sha256"]
    return out


def test_unlisted_and_repeated_members_are_refused(fit_path, tmp_path):
    m = members_of(fit_path)
    write_members(tmp_path / "same.mixfit", m)
    load_fit(tmp_path / "same.mixfit")
    write_members(tmp_path / "evil.mixfit", {**m, "evil.py": b"print('hi')\n"})
    with pytest.raises(FitFileError, match=r"evil\.mixfit: member\(s\) \['evil\.py'\] are not listed in the header"):
        load_fit(tmp_path / "evil.mixfit")
    write_members(tmp_path / "ens.mixfit", {**m, "ensemble.eqx": m["law.eqx"]})
    with pytest.raises(FitFileError, match=r"\['ensemble\.eqx'\] are not listed"):
        read_header(tmp_path / "ens.mixfit")
    write_members(tmp_path / "twice.mixfit", m, extra=[("law.eqx", m["law.eqx"])])
    with pytest.raises(FitFileError, match=r"\['law\.eqx'\] appear more than once"):
        load_fit(tmp_path / "twice.mixfit")


@pytest.mark.parametrize("version", [3.0, "3", True, 0])
def test_format_version_must_be_an_integer_from_one(version, fit_path, tmp_path):
    write_members(tmp_path / "v.mixfit", edited(members_of(fit_path), format_version=version))
    want = "is not an integer" if not isinstance(version, int) or isinstance(version, bool) else "is not a version mixjax ever wrote"
    with pytest.raises(FitFileError, match=rf"format_version {version!r} {want}") as e:
        load_fit(tmp_path / "v.mixfit")
    assert "upgrade" not in str(e.value)
    write_members(tmp_path / "v3.mixfit", edited(members_of(fit_path), format_version=3))
    load_fit(tmp_path / "v3.mixfit")


@pytest.mark.parametrize("version", [1, 2])
def test_relabelled_version_3_file_is_refused(version, fit_path, tmp_path):
    write_members(tmp_path / "old.mixfit", edited(members_of(fit_path), sign=False, format_version=version))
    with pytest.raises(FitFileError, match=r"header\.json does not match its checksum"):
        load_fit(tmp_path / "old.mixfit")
    with pytest.raises(FitFileError, match=r"header\.json does not match its checksum"):
        load_ensemble(tmp_path / "old.mixfit")


@pytest.mark.parametrize("version", [1, 2])
def test_older_files_verify_the_checksums_they_hold(version, fit_path, tmp_path):
    m = members_of(fit_path)
    old = edited(m, sign=False, drop_sum=True, format_version=version)
    write_members(tmp_path / "old.mixfit", old)
    same = zip(jax.tree_util.tree_leaves(load_fit(tmp_path / "old.mixfit").law), jax.tree_util.tree_leaves(load_fit(fit_path).law))
    assert all(np.array_equal(a, b) for a, b in same)
    write_members(tmp_path / "zero.mixfit", {**old, "law.eqx": bytes(len(m["law.eqx"]))})
    with pytest.raises(FitFileError, match=r"zero\.mixfit: member law\.eqx does not match its checksum"):
        load_fit(tmp_path / "zero.mixfit")
    # checksums that a header holds must cover every member, whatever its version
    sums = {k: v for k, v in json.loads(m["header.json"])["checksums"].items() if k != "law.eqx"}
    write_members(tmp_path / "partial.mixfit", edited(m, sign=False, drop_sum=True, format_version=version, checksums=sums))
    with pytest.raises(FitFileError, match=r"no checksum for law\.eqx"):
        load_fit(tmp_path / "partial.mixfit")


def test_version_1_without_checksums_still_loads(fit_path, tmp_path):
    old = edited(members_of(fit_path), sign=False, drop_sum=True, format_version=1, checksums=None)
    write_members(tmp_path / "v1.mixfit", old)
    assert "checksums" not in read_header(tmp_path / "v1.mixfit")
    assert load_fit(tmp_path / "v1.mixfit").info["domains"] == load_fit(fit_path).info["domains"]
