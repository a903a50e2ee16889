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
        (lambda h, y: h.__setitem__(5, h[5] * 1.5), r"mixture row 5 sums to 1\.5, expected 1 \+- 0\.01"),
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
    with pytest.raises(DataError, match="no 'weight_<domain>' columns"):
        mj.from_dataframe(pd.DataFrame({"a_loss": [1.0]}))
    with pytest.raises(DataError, match="no '<target>_loss' columns"):
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
