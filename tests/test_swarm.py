"""Swarm tables: the Marin phase layout, the Olmix ratios/metrics pair, unique tokens and exposures, checked against
pandas/numpy computations on the raw bundled files; bad inputs give errors naming the fault."""

import contextlib
import fnmatch
import importlib.resources
import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import mixjax
from mixjax.cli import main
from mixjax.cli._common import load_data
from mixjax.data import DataError
from mixjax.swarm import load_phase_table, load_ratios_metrics, load_unique_tokens, select_metrics, with_unique_tokens

DATA = importlib.resources.files("mixjax") / "datasets"
MARIN = DATA / "marin_two_phase_60m.csv"
TOKENS = DATA / "marin_unique_tokens.csv"
OLMIX_R = DATA / "olmix" / "full_reuse_update_5_seed_0_ratios.csv"
OLMIX_M = DATA / "olmix" / "full_reuse_update_5_seed_0_metrics.csv"
TARGET = "eval/uncheatable_eval/bpb"


@pytest.fixture(scope="module")
def raw():
    return pd.read_csv(str(MARIN))


@pytest.fixture(scope="module")
def marin():
    return mixjax.load_dataset("marin2phase")


def phase_frame(raw, p):
    cols = [c for c in raw.columns if c.startswith(f"phase_{p}_")]
    return raw[cols].rename(columns=lambda c: c[len(f"phase_{p}_") :])


def test_marin_loads_flattened(marin, raw):
    assert (marin.n_rows, marin.n_domains, marin.targets) == (193, 78, (TARGET,))
    np.testing.assert_allclose(marin.mixtures.sum(axis=1), 1.0, atol=1e-12)
    names = list(phase_frame(raw, 0).columns)
    assert len(names) == 39 and marin.base_domains == tuple(names) and marin.phases == ("phase_0", "phase_1")
    assert len(set(marin.domains)) == 78 and "dolma3_cc/health_high@phase_1" in marin.domains
    np.testing.assert_array_equal(marin.losses[:, 0], raw[TARGET].to_numpy())
    np.testing.assert_allclose(marin.phase_shares, [0.8, 0.2])
    # phase weights give back the raw CSV's phase columns; the flattened mixture is share * weight
    w = marin.phase_weights()
    assert w.shape == (193, 2, 39)
    for p, share in enumerate((0.8, 0.2)):
        ref = phase_frame(raw, p)[list(marin.base_domains)].to_numpy()
        np.testing.assert_allclose(w[:, p], ref, rtol=1e-12, atol=1e-15)
        cols = [marin.domains.index(f"{d}@phase_{p}") for d in marin.base_domains]
        np.testing.assert_allclose(marin.mixtures[:, cols], share * ref, rtol=1e-12, atol=1e-15)


def test_exposures_match_numpy(marin, raw):
    tok = pd.read_csv(str(TOKENS)).set_index("domain")["unique_tokens"]
    a, b = phase_frame(raw, 0), phase_frame(raw, 1)
    names = list(a.columns)
    expect = 1.2e9 * (0.8 * a[names].to_numpy() + 0.2 * b[names].to_numpy()) / tok[names].to_numpy()[None, :]
    got = marin.exposures()
    assert got.shape == (193, 39)
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    # a subset keeps the metadata; no unique tokens or no token count is refused
    np.testing.assert_allclose(marin.subset([3, 5]).exposures(), expect[[3, 5]], rtol=1e-12)
    with pytest.raises(DataError, match="unique-token"):
        load_phase_table(raw, targets=TARGET, phase_shares=(0.8, 0.2), n_tokens=1.2e9).exposures()
    with pytest.raises(DataError, match="n_tokens"):
        load_phase_table(raw, targets=TARGET, phase_shares=(0.8, 0.2), unique_tokens=str(TOKENS)).exposures()


def test_globs_and_mean_objective(raw):
    glob = "eval/paloma/*/bpb"
    metric_cols = [c for c in raw.columns if not c.startswith("phase_") and raw[c].dtype.kind == "f"]
    expect = fnmatch.filter(metric_cols, glob)
    assert len(expect) > 5
    d = load_phase_table(raw, targets=glob, phase_shares=(0.8, 0.2))
    assert list(d.targets) == expect
    assert select_metrics(metric_cols, [glob, expect[0]]) == expect
    m = load_phase_table(raw, targets=glob, objective="mean", phase_shares=(0.8, 0.2))
    assert m.targets == ("objective",)
    np.testing.assert_allclose(m.losses[:, 0], raw[expect].mean(axis=1).to_numpy(), rtol=1e-12)
    wt = load_phase_table(raw, objective={expect[0]: 3.0, expect[1]: 1.0}, phase_shares=(0.8, 0.2))
    np.testing.assert_allclose(wt.losses[:, 0], (3 * raw[expect[0]] + raw[expect[1]]).to_numpy() / 4, rtol=1e-12)
    with pytest.raises(DataError, match="no metric column matches 'eval/nothing/\\*'"):
        load_phase_table(raw, targets="eval/nothing/*", phase_shares=(0.8, 0.2))


def test_equal_shares_are_announced(raw):
    with pytest.warns(UserWarning, match="assuming equal shares 1/2"):
        d = load_phase_table(raw, targets=TARGET)
    np.testing.assert_allclose(d.phase_shares, [0.5, 0.5])


def test_phase_not_summing_to_one_names_row_and_phase(raw):
    bad = raw.copy()
    col = next(c for c in raw.columns if c.startswith("phase_1_"))
    bad.loc[7, col] += 0.3
    with pytest.raises(DataError, match=r"row 7, phase 1 sums to 1\.3"):
        load_phase_table(bad, targets=TARGET, phase_shares=(0.8, 0.2))
    bad.loc[7, col] = raw.loc[7, col] + 0.005  # within 0.01: renormalized with a warning
    with pytest.warns(UserWarning, match="renormalized"):
        d = load_phase_table(bad, targets=TARGET, phase_shares=(0.8, 0.2))
    np.testing.assert_allclose(d.phase_weights()[7, 1].sum(), 1.0, rtol=1e-12)


def test_olmix_pair_and_missing_run():
    r, m = pd.read_csv(str(OLMIX_R)), pd.read_csv(str(OLMIX_M))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = load_ratios_metrics(r, m, targets="*", objective="mean")
    doms = [c for c in r.columns if c not in ("Unnamed: 0", "run", "name", "index")]
    assert d.domains == tuple(doms) and d.n_rows == 64
    np.testing.assert_allclose(d.mixtures, r[doms].to_numpy() / r[doms].to_numpy().sum(1, keepdims=True), rtol=1e-12)
    mets = [c for c in m.columns if c not in ("Unnamed: 0", "run", "name", "index")]
    np.testing.assert_allclose(d.losses[:, 0], m.set_index("run").loc[r["run"], mets].mean(axis=1).to_numpy(), rtol=1e-12)
    # shuffled metrics rows are joined on run, not by position
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d2 = load_ratios_metrics(r, m.sample(frac=1.0, random_state=0), targets="*", objective="mean")
    np.testing.assert_array_equal(d2.losses, d.losses)
    gone = m["run"].iloc[10]
    with pytest.raises(DataError, match=f"not in.*{gone}"):
        load_ratios_metrics(r, m.drop(index=10), targets="*", objective="mean")


def test_unique_tokens_need_every_domain(raw):
    tok = pd.read_csv(str(TOKENS))
    with pytest.raises(DataError, match="dolma3_wikipedia"):
        load_phase_table(raw, targets=TARGET, phase_shares=(0.8, 0.2), unique_tokens=tok[tok.domain != "dolma3_wikipedia"])
    counts = load_unique_tokens(str(TOKENS))
    assert counts == dict(zip(tok["domain"], tok["unique_tokens"].astype(float)))
    bare = load_phase_table(raw, targets=TARGET, phase_shares=(0.8, 0.2), n_tokens=1.2e9)
    with pytest.warns(UserWarning, match="extra_domain"):
        d = with_unique_tokens(bare, {**counts, "extra_domain": 5.0})
    np.testing.assert_array_equal(d.unique_tokens, tok.set_index("domain").loc[list(d.base_domains), "unique_tokens"].to_numpy())


@pytest.mark.filterwarnings("ignore::mixjax.MaxStepsWarning")
def test_loglinear_fit_ranks_the_marin_runs(marin):
    f = mixjax.fit("loglinear", marin, starts=2, max_steps=50, optimizer="adam", seed=0)
    pred = np.asarray(f.predict(marin))[:, 0]
    rho = scipy.stats.spearmanr(pred, marin.losses[:, 0]).statistic
    assert rho > 0.5, rho


def test_cli_fit_phase_layout_with_slash_target(tmp_path):
    path = tmp_path / "marin.csv"
    path.write_bytes(MARIN.read_bytes())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["fit", str(path), "--law", "loglinear", "--targets", TARGET, "--starts", "2", "--max-steps", "50",
                   "--optimizer", "adam", "--json"])
    assert rc == 0, err.getvalue()
    res = json.loads(out.getvalue())
    assert res["targets"] == [TARGET] and list(res["per_target_train_mre"]) == [TARGET]
    assert len(res["domains"]) == 78 and "equal shares" in err.getvalue()


def test_load_data_reads_the_pair_with_a_mean_objective():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = load_data(str(OLMIX_R), ["mean:arc_*"], metrics=str(OLMIX_M))
    r, m = pd.read_csv(str(OLMIX_R)), pd.read_csv(str(OLMIX_M)).set_index("run")
    cols = fnmatch.filter(list(m.columns), "arc_*")
    assert d.targets == ("objective",) and len(cols) == 2
    np.testing.assert_allclose(d.losses[:, 0], m.loc[r["run"], cols].mean(axis=1).to_numpy(), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:the best of 1 starts of loglinear on 'marin2phase' stopped at max_steps=5:mixjax.MaxStepsWarning")
def test_a_phased_optimum_keeps_each_phase_on_its_share():  # 5 steps: any law checks the phase layout
    import jax

    jax.config.update("jax_enable_x64", True)
    import mixjax as mj

    data = mj.load_dataset("marin2phase")
    f = mj.fit("loglinear", data, starts=1, max_steps=5, optimizer="adam")
    assert f.info["phases"] == list(data.phases) and len(f.info["phases"]) == 2
    res = mj.optimize_mixture(f, check_fixed=False, starts=2, steps=50)  # loglinear: no scale to give
    blocks = np.asarray(res.mixture).reshape(2, -1)  # h[domain@phase_p] = s_p w_p[domain], phase-major
    np.testing.assert_allclose(blocks.sum(axis=1), data.phase_shares, atol=1e-9)  # no tokens moved between phases
    np.testing.assert_allclose(np.asarray(res.phase_mixtures), blocks / np.asarray(data.phase_shares)[:, None], atol=1e-9)


@pytest.mark.parametrize("command", [["suggest", "marin2phase", "--n", "2", "--floor", "0.5"]])
def test_cli_checks_phased_suggestion_bounds_before_fitting(command):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*command, "--law", "loglinear"])
    assert rc == 2 and "phase_0" in err.getvalue() and "bootstrapping" not in err.getvalue()
