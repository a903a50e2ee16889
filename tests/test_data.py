"""Loading, validation and selection of datasets; bad input gives clear errors or documented corrections."""

import io
import warnings

import numpy as np
import pandas as pd
import pytest

import mixjax as mj
from mixjax.data import DataError


def tiny(n=6, K=3, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.ones(K), size=n)
    y = rng.uniform(2.0, 4.0, size=(n, K))
    return h, y


def test_bundled_datasets_load_with_expected_shapes():
    expect = {"slimpajama7": (2452, 7, 8), "pile4": (86, 4, 4), "pile17_regmix1b": (62, 17, 17), "pile17_regmix1m": (768, 17, 13), "chinchilla": (245, 1, 1)}
    for name, (n, K, V) in expect.items():
        d = mj.load_dataset(name)
        assert (d.n_rows, d.n_domains, d.n_targets) == (n, K, V), name
        np.testing.assert_allclose(d.mixtures.sum(1), 1.0, atol=1e-12)
    sp = mj.load_dataset("slimpajama7")
    assert int((~sp.mask).sum()) == 16  # the README's 16 missing cells stay missing (masked), not dropped
    assert "openhermes" in sp.targets and "openhermes" not in sp.domains
    y, m = sp.domain_losses()
    assert y.shape == (2452, 7) and m.sum() == 2452 * 7 - int((~sp.mask[:, : 7]).sum())
    r1m = mj.load_dataset("pile17_regmix1m")
    assert len(r1m.by_split("train")) == 512 and len(r1m.by_split("test")) == 256
    assert np.isnan(r1m.n_tokens).all() and len(r1m.scales()) == 1


def test_nearly_equal_checkpoints_stay_distinct(slimpajama):
    a = slimpajama.at_scale(122e6, 1.9998e10)
    b = slimpajama.at_scale(122e6, 2.0e10)
    assert len(a) == 60 and len(b) == 60
    assert len(slimpajama.scales()) == 66
    with pytest.raises(DataError, match="no rows"):
        slimpajama.at_scale(123e6)


def test_csv_and_dataframe_round_trip():
    h, y = tiny()
    d = mj.from_arrays(h, y, 1e8, 2e9, domains=["a", "b", "c"])
    df = d.to_dataframe()
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    buf.seek(0)
    d2 = mj.load_csv(buf, name="x")
    np.testing.assert_array_equal(d2.mixtures, d.mixtures)
    np.testing.assert_array_equal(d2.losses, d.losses)
    np.testing.assert_array_equal(d2.model_size, d.model_size)
    assert d2.domains == ("a", "b", "c")


def test_inputs_are_not_modified_and_arrays_read_only():
    h, y = tiny()
    h[0] *= 1.001  # off by 0.1 %: renormalized with a warning
    h0, y0 = h.copy(), y.copy()
    with pytest.warns(UserWarning, match="renormalized"):
        d = mj.from_arrays(h, y)
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_allclose(d.mixtures.sum(1), 1.0, atol=1e-15)
    with pytest.raises(ValueError):
        d.mixtures[0, 0] = 1.0


def test_missing_loss_is_masked_not_dropped():
    h, y = tiny()
    y[2, 1] = np.nan
    d = mj.from_arrays(h, y)
    assert d.mask.sum() == y.size - 1 and not d.mask[2, 1]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda h, y: y.__setitem__((1, 2), np.inf), r"loss is infinite at row 1, column domain2_loss"),
        (lambda h, y: y.__setitem__((3, 0), -1.0), r"loss must be positive; row 3, column domain0_loss"),
        (lambda h, y: y.__setitem__((3, 0), 0.0), r"loss must be positive; row 3"),
        (lambda h, y: h.__setitem__((4, 1), -0.1), r"negative mixture weight at row 4, column weight_domain1"),
        (lambda h, y: h.__setitem__((0, 0), np.nan), r"mixture weight is not finite at row 0"),
        (lambda h, y: h.__setitem__(5, h[5] * 1.5), r"mixture row 5 sums to 1\.5 over the weight columns weight_domain0, weight_domain1, weight_domain2, expected 1 \+- 0\.01"),
    ],
)
def test_bad_values_raise_naming_row_and_column(mutate, message):
    h, y = tiny()
    mutate(h, y)
    with pytest.raises(DataError, match=message):
        mj.from_arrays(h, y)


def test_bad_shapes_and_columns():
    h, y = tiny()
    with pytest.raises(DataError, match="losses has 5 rows but mixtures has 6"):
        mj.from_arrays(h, y[:5])
    with pytest.raises(DataError, match="empty"):
        mj.from_arrays(h[:0], y[:0])
    with pytest.raises(DataError, match="2 domain names for 3 mixture columns"):
        mj.from_arrays(h, y, domains=["a", "b"])
    with pytest.raises(DataError, match="model_size has shape"):
        mj.from_arrays(h, y, model_size=np.ones(4))
    with pytest.raises(DataError, match="no '<target>_loss' \\(or 'loss'\\) columns"):
        mj.from_dataframe(pd.DataFrame({"weight_a": [1.0]}))
    with pytest.raises(DataError, match="no loss column for target"):
        mj.from_dataframe(pd.DataFrame({"weight_a": [1.0], "a_loss": [2.0]}), targets=["b"])
    with pytest.raises(DataError, match="column 'weight_a' is not numeric"):
        mj.from_dataframe(pd.DataFrame({"weight_a": ["x"], "a_loss": [2.0]}))
    with pytest.raises(DataError, match="no such file"):
        mj.load_csv("/nonexistent/file.csv")
    with pytest.raises(DataError, match="unknown dataset"):
        mj.load_dataset("nope")


def test_fewer_cells_than_parameters_is_an_error():
    h, y = tiny(n=3, K=3)
    d = mj.from_arrays(h, y, 1e8, 1e9)
    with pytest.raises(DataError, match=r"9 measured loss cells for the 16 free parameters of capacity_noise"):
        mj.fit("capacity_noise", d)


def test_law_needing_tokens_refuses_unknown_token_counts():
    d = mj.load_dataset("pile17_regmix1m")
    with pytest.raises(DataError, match="needs n_tokens, which is missing in 768 row"):
        mj.fit("capacity_noise", d)


def test_splits_are_reproducible_and_by_mixture_keeps_groups(slimpajama):
    sub = slimpajama.at_scale(122e6)
    a1, b1 = sub.split_rows(0.2, seed=3)
    a2, b2 = sub.split_rows(0.2, seed=3)
    np.testing.assert_array_equal(a1.mixtures, a2.mixtures)
    tr, va = sub.split_rows(0.25, seed=1, by="mixture")
    assert not set(tr.mixture_id) & set(va.mixture_id)
    assert len(tr) + len(va) == len(sub)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="val_fraction"):
            sub.split_rows(1.5)


def test_final_checkpoints(slimpajama):
    fc = slimpajama.final_checkpoints()
    # one row per (mixture, model size): 61 mixtures over the sizes, the last checkpoint of each
    per_size = {s: int((fc.model_size == s).sum()) for s in np.unique(fc.model_size)}
    assert per_size == {122e6: 60, 310e6: 60, 680e6: 40, 937e6: 40, 1235e6: 20, 2718e6: 4}
    assert set(np.unique(fc.n_tokens)) == {2.0e10, 2.592e10, 3.528e10, 4.608e10, 1.0368e11}


# --------------------------------------------------------------------------- columns: explicit and recognized
def csv(text, **kw):
    return mj.load_csv(io.StringIO(text), name="t", **kw)


WD = "weight_a,weight_b,weight_decay,a_loss,b_loss\n0.5,0.5,0.1,2.0,3.0\n0.2,0.8,0.1,2.5,2.9\n"


def test_a_weight_column_that_is_not_a_domain_is_named():
    with pytest.raises(DataError, match=r"column 'weight_decay' is not a mixture weight: the other weight columns sum to 1 without it.*--domains"):
        csv(WD)
    d = csv(WD, domains=["a", "b"])  # named explicitly: read, the other weight_* column ignored
    assert d.domains == ("a", "b") and d.n_domains == 2
    np.testing.assert_array_equal(d.mixtures, [[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(DataError, match=r"column 'weight_steps' is not a mixture weight: row 1 is 300\.0, outside \[0, 1\]"):
        csv("weight_a,weight_b,weight_steps,a_loss\n0.5,0.5,0,2\n0.5,0.5,300,2\n")
    with pytest.raises(DataError, match=r"no weight column for domain\(s\) \['c'\].*weight columns are \['weight_a', 'weight_b', 'weight_decay'\]"):
        csv(WD, domains=["a", "c"])


def test_duplicate_headers_are_an_error_never_a_new_column():
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['arxiv_loss'\]"):
        csv("weight_arxiv,weight_b,arxiv_loss,arxiv_loss\n0.5,0.5,2,3\n")
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['weight_arxiv'\]"):
        csv("weight_arxiv,weight_arxiv,arxiv_loss\n0.5,0.5,2\n")
    # a frame pandas already read: the X.1 renaming is recognized
    df = pd.read_csv(io.StringIO("weight_a,a_loss,a_loss\n1,2,3\n"))
    assert list(df.columns) == ["weight_a", "a_loss", "a_loss.1"]
    with pytest.raises(DataError, match=r"'a_loss\.1' looks like a renamed duplicate of 'a_loss'"):
        mj.from_dataframe(df)


def test_all_zero_weight_column_warns_naming_it():
    with pytest.warns(UserWarning, match=r"\['weight_c'\] are 0 in every row"):
        d = csv("weight_a,weight_b,weight_c,a_loss\n0.5,0.5,0,2\n0.3,0.7,0,2.2\n")
    assert d.domains == ("a", "b", "c")


def test_targets_picked_up_and_unmatched_helpers():
    d = csv("weight_a,weight_b,a_loss,train_loss,loss\n0.5,0.5,2,3,4\n")
    assert d.targets == ("loss", "a", "train")  # train_loss is a target unless the targets are named
    assert d.unmatched_targets() == ("loss", "train") and d.domains_without_loss() == ("b",)
    d = csv("weight_a,weight_b,a_loss,train_loss\n0.5,0.5,2,3\n", targets=["a"])
    assert d.targets == ("a",)
    with pytest.raises(DataError, match=r"no loss column for target\(s\) \['z'\]"):
        csv("weight_a,a_loss\n1,2\n", targets="a z".split())


def test_sum_error_names_the_columns_read():
    # a weight column missing from the file: the rows sum to 0.85, and the message says over which columns
    with pytest.raises(DataError, match=r"row 0 sums to 0\.85 over the weight columns weight_a, weight_b, expected 1 \+- 0\.01.*--sum-tol"):
        csv("weight_a,weight_b,a_loss\n0.5,0.35,2\n0.5,0.5,2.1\n")
    with pytest.warns(UserWarning, match="renormalized"):
        d = csv("weight_a,weight_b,a_loss\n0.5,0.35,2\n0.5,0.5,2.1\n", sum_tol=0.2)
    np.testing.assert_allclose(d.mixtures[0], [0.5 / 0.85, 0.35 / 0.85])


def test_table_without_mixtures_loads_with_zero_domains():
    d = csv("model_size,n_tokens,loss\n1e8,2e9,3.2\n4e8,8e9,2.9\n1e9,2e10,2.7\n")
    assert d.n_domains == 0 and d.mixtures.shape == (3, 0) and d.targets == ("loss",)
    np.testing.assert_array_equal(d.model_size, [1e8, 4e8, 1e9])
    d2 = csv("model_size,n_tokens,web_loss,code_loss\n1e8,2e9,3.2,2.1\n4e8,8e9,2.9,1.8\n")
    assert d2.n_domains == 0 and d2.targets == ("web", "code")
    back = mj.from_dataframe(d.to_dataframe())  # round trip keeps K = 0 and the bare loss column
    assert back.n_domains == 0 and back.targets == ("loss",)
    np.testing.assert_array_equal(back.losses, d.losses)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"weight_a,a_loss\n\xff\xfe1,2\n", r"not UTF-8 text \(byte 0xff at offset 16\)"),
        (b"\x00\x01\x02junk", "contains NUL bytes"),
        (b"weight_a,a_loss\n1,abc\n", r"column 'a_loss' is not numeric \(row 0 is 'abc'\)"),
        (b"weight_a,a_loss\n", "empty"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        mj.load_csv(path)
    assert "bad" in str(e.value)


def test_a_directory_is_not_a_csv(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        mj.load_csv(tmp_path)
