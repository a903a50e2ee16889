"""The code of the README and of the docs works as written, and their links lead somewhere.

Every ```python block of README.md and of each page of docs/ runs in order, one namespace per page (later blocks
use names of earlier ones, like a notebook; a page's first block loads what it needs), from an empty working
directory, and its results are checked against references computed here or published elsewhere. Every
`mixjax ...` line of the ```bash blocks runs in-process with exit status 0; the two set-up commands are checked
against what CI runs, and the main job's fit against the same fit through the Python API. Every relative link of
README.md, docs/*.md and benchmarks/README.md points to a file that exists (and an anchor to one of its headings).
"""

import ast
import contextlib
import io
import json
import pathlib
import re
import shlex
import warnings

import jax
import numpy as np
import pytest

import mixjax as mj
from mixjax.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]  # the pages whose code runs
LINKED = [*PAGES, ROOT / "benchmarks" / "README.md"]  # the pages whose links are checked
MAIN_JOB = 'pip install ".[plot]" && mixjax fit slimpajama7 --model-size 122M --tokens 9.998B --val-fraction 0.2'
TEST_JOB = 'pip install -e ".[test]" && python -m pytest -q -p no:cacheprovider'
# Besiroglu et al. (2024), Epoch AI's refit of Chinchilla's law to 240 runs (N, D in raw counts). mixjax reaches a
# slightly lower Huber objective than their reported point (benchmarks/results/chinchilla_epoch.md): E +0.00 %,
# A -0.87 %, alpha -0.14 %, B +2.8 %, beta +0.38 %; the tolerances leave room for that and no more.
EPOCH = {"E": (1.8172, 0.005), "A": (482.01, 0.02), "alpha": (0.3478, 0.005), "B": (2085.43, 0.05), "beta": (0.3658, 0.01)}


def name(page):
    return page.relative_to(ROOT).as_posix()


def blocks(lang, page=README):
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(), flags=re.S)


def bash_mixjax_commands():
    """Every `mixjax ...` command of the ```bash blocks other than the two set-up commands, as argument lists."""
    commands = []
    for page in PAGES:
        for block in blocks("bash", page):
            for line in block.splitlines():
                if line.strip() in (MAIN_JOB, TEST_JOB):
                    continue
                for part in line.split("&&"):
                    words = shlex.split(part)
                    if words and words[0] == "mixjax":
                        commands.append(words[1:])
    return commands


@pytest.fixture(scope="module")
def run_page(tmp_path_factory):
    """`run_page("docs/laws.md")`: the namespace left by running every ```python block of the page in order, in an
    empty directory (each page once per module, in its own namespace), with the warnings they raised."""
    done = {}

    def run(page_name):
        if page_name not in done:
            page = ROOT / page_name
            namespace, cwd = {}, tmp_path_factory.mktemp(page.stem)
            with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mp.chdir(cwd)
                for i, code in enumerate(blocks("python", page)):
                    with contextlib.redirect_stdout(io.StringIO()):
                        exec(compile(code, f"{page_name} python block {i + 1}", "exec"), namespace)
            namespace["__warnings__"] = [f"{w.category.__name__}: {w.message}" for w in caught]
            namespace["__cwd__"] = cwd
            done[page_name] = namespace
        return done[page_name]

    return run


@pytest.fixture(scope="module")
def ns(run_page):
    return run_page("README.md")


def test_setup_commands_are_the_ones_ci_runs():
    bash = blocks("bash")
    assert bash[0].strip() == MAIN_JOB
    assert bash[1].strip() == TEST_JOB
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]" && python -m pytest -q -p no:cacheprovider' in ci


def test_main_job_command_runs_and_reports(ns, capsys):
    args = shlex.split(blocks("bash")[0].split("&&")[1])[1:]
    assert main(args + ["--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["law"] == "capacity_noise" and out["n_params"] == 36 and out["status"] == "converged"
    # the one warning it prints is the one the README explains right under the command
    warned = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warned) == 1 and "'openhermes_loss'" in warned[0], captured.err
    after = README.read_text().split(MAIN_JOB, 1)[1].split("```", 2)[1]
    assert "`openhermes_loss`" in after and "`--targets`" in after
    # the same fit through the Python API (the quick start's) gives the same validation error
    assert ns["fit"].info["n_rows"] == 48 and ns["fit"].info["starts"] == 16
    assert abs(out["val_mre"] - ns["fit"].evaluate(ns["val"])["mre"]) < 1e-12
    assert out["val_mre"] < 0.011


def test_bash_mixjax_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in bash_mixjax_commands():
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main(args)
        assert rc == 0, f"mixjax {shlex.join(args)}: {err.getvalue()}"


# the two longest pages (a calibrated optimum, a comparison: 12-17 s each) run with -m slow, with every check of them
SLOW_PAGES = ("docs/mixtures.md", "docs/python.md")


@pytest.mark.parametrize("page", [pytest.param(name(p), marks=pytest.mark.slow) if name(p) in SLOW_PAGES else name(p)
                                  for p in PAGES if blocks("python", p)])
def test_python_blocks_run_without_warnings(run_page, page):
    assert run_page(page)["__warnings__"] == []


# README.md


def test_quick_start(ns):
    fit, val, best = ns["fit"], ns["val"], ns["best"]
    assert fit.law.name == "capacity_noise" and fit.info["n_rows"] == 48
    assert fit.evaluate(val)["mre"] < 0.0100
    boot = ns["boot"]
    lo_hi = boot.param_intervals(level=0.9)["b"]
    # percentile interval: the 5 % and 95 % quantiles of the resamples' b, recomputed with numpy (with 8 resamples of
    # a weakly identified b it need not contain the estimate, which is the full-data fit's b)
    b = np.asarray(boot.laws.params()["b"])
    np.testing.assert_allclose(np.stack([lo_hi["lo"], lo_hi["hi"]]), np.quantile(b, [0.05, 0.95], axis=0), rtol=1e-9)
    np.testing.assert_allclose(lo_hi["estimate"], np.asarray(boot.point.law.params()["b"]), rtol=1e-12)
    assert abs(best.mixture.sum() - 1) < 1e-9
    assert (best.mixture >= 0.02 - 1e-9).all() and (best.mixture <= 0.42 + 1e-9).all()
    # the predicted losses are the fitted law's at the optimum (laws' units: 1235M parameters, 46.08B tokens)
    direct = np.asarray(fit.law.predict(np.asarray(best.mixture)[None], 1235.0, 46.08))[0]
    np.testing.assert_allclose(np.asarray(best.losses), direct, rtol=1e-9)


# docs/laws.md


def test_user_law(ns, run_page):
    laws = run_page("docs/laws.md")
    my_fit, val = laws["my_fit"], laws["val"]
    assert my_fit.law.name == "power_floor" and my_fit.n_params == 21 and my_fit.status.name == "converged"
    # the page holds out the quick start's rows
    np.testing.assert_array_equal(val.mixtures, ns["val"].mixtures)
    # a mixture-only law at one scale: within 2 % held out (1.05 % measured), short of the capacity-noise law
    assert ns["fit"].evaluate(val)["mre"] < my_fit.evaluate(val)["mre"] < 0.02


def test_chinchilla_without_mixtures_meets_epoch_ai(run_page):
    laws = run_page("docs/laws.md")
    runs, chin = laws["runs"], laws["chin"]
    assert (runs.n_domains, runs.targets, runs.n_rows) == (0, ("loss",), 240)
    raw = {k: float(np.asarray(v).ravel()[0]) for k, v in chin.law.raw_count_params().items()}
    for key, (ref, rtol) in EPOCH.items():
        assert raw[key] == pytest.approx(ref, rel=rtol), key


def test_function_law_reduces_to_chinchilla(run_page):
    laws = run_page("docs/laws.md")
    dc, chin = laws["dc"].params(), laws["chin"].params()
    # with no run repeating data the law is Chinchilla's: the same optimum, reached from another parametrisation
    np.testing.assert_allclose(np.exp(dc["e"]), chin["E"].ravel()[0], rtol=1e-5)
    np.testing.assert_allclose(dc["alpha"], chin["alpha"].ravel()[0], rtol=1e-5)
    np.testing.assert_allclose(dc["beta"], chin["beta"].ravel()[0], rtol=1e-5)
    iv = laws["dc_boot"].param_intervals(level=0.9)["alpha"]
    assert iv["lo"] <= iv["estimate"] <= iv["hi"] and iv["hi"] - iv["lo"] < 0.1


# docs/python.md


@pytest.mark.slow  # runs a SLOW_PAGES page
def test_compare_scores_match_an_independent_recomputation(run_page):
    page = run_page("docs/python.md")
    cmp, data = page["cmp"], page["data"]
    code = "".join(blocks("python", DOCS / "python.md"))
    given = re.search(r"mj\.compare\(data, (\[.*?\])", code).group(1)
    assert sorted(s.law for s in cmp.scores) == sorted(ast.literal_eval(given))
    keys = [s.val_mre_common for s in cmp.scores]
    assert keys == sorted(keys)
    assert (data.mixtures > 0).all() and np.isfinite(data.losses).all()  # every held-out cell is counted by every law
    domain_losses, _ = data.domain_losses()
    for s in cmp.scores:
        per_domain = mj.get_law(s.law).per_domain
        obs = domain_losses if per_domain else data.losses
        # the cells every compared law counts: the domains' own losses (laws of any targets also predict openhermes)
        common = list(range(data.n_domains)) if per_domain else [data.targets.index(d) for d in data.domains]
        errs = np.full(obs.shape, np.nan)
        for law, split in zip(s.fits, cmp.splits):
            pred = np.asarray(law.predict(data.mixtures[split.test], data.model_size_m[split.test], data.n_tokens_b[split.test]))
            errs[split.test] = np.abs(pred - obs[split.test]) / obs[split.test]
        assert not np.isnan(errs).any()  # every row is held out by exactly one fold
        assert s.val_mre == pytest.approx(errs.mean(), rel=1e-9), s.law
        assert s.val_mre_common == pytest.approx(errs[:, common].mean(), rel=1e-9), s.law


# docs/fitting.md


def test_fitting_statuses_and_bootstrap(ns, run_page):
    page = run_page("docs/fitting.md")
    fit, boot = page["fit"], page["boot"]
    # the bootstrap's point estimate is the quick start's fit, and it draws the quick start's resamples
    np.testing.assert_array_equal(np.asarray(fit.law.log_c), np.asarray(ns["fit"].law.log_c))
    np.testing.assert_array_equal(boot.weights, ns["boot"].weights)
    assert (boot.weights.sum(axis=1) == boot.weights.shape[1]).all()  # each resample draws n rows
    # the status counts are those of the starts' own status codes
    counts = np.bincount(np.asarray(fit.starts.status).ravel(), minlength=len(mj.Status))
    assert page["fit"].info["start_status"] == {s.name: int(counts[s]) for s in mj.Status}
    assert fit.status == mj.Status(int(np.asarray(fit.starts.status).ravel()[fit.info["best_start"]]))
    # a percentile interval is numpy's quantiles over the usable resamples, each resample's law taken out one by one
    b_resampled = np.stack([np.asarray(jax.tree.map(lambda x: x[r], boot.laws).params()["b"]) for r in np.flatnonzero(boot.ok)])
    lo, hi = np.quantile(b_resampled.max(axis=1) - b_resampled.min(axis=1), [0.05, 0.95])
    assert page["spread"]["lo"] == pytest.approx(lo, rel=1e-12) and page["spread"]["hi"] == pytest.approx(hi, rel=1e-12)
    b = page["b"]
    np.testing.assert_allclose(np.stack([b["lo"], b["hi"]]), np.quantile(b_resampled, [0.05, 0.95], axis=0), rtol=1e-12)
    np.testing.assert_array_equal(b["estimate"], np.asarray(fit.params()["b"]))
    # the saved ensemble is the resample fits, bit for bit
    saved = mj.load_ensemble(page["__cwd__"] / "boot.mixjax")
    np.testing.assert_array_equal(np.asarray(saved.log_c), np.asarray(boot.laws.log_c))


# docs/swarms.md
def test_swarm_page_exposures_and_fit(run_page):
    """Exposures against the raw CSV columns and token counts (pandas), and the log-linear fit's held-out rank
    correlation against scipy."""
    import importlib.resources

    import pandas as pd
    import scipy.stats

    page = run_page("docs/swarms.md")
    root = importlib.resources.files("mixjax").joinpath("datasets")
    raw = pd.read_csv(io.StringIO(root.joinpath("marin_two_phase_60m.csv").read_text()))
    counts = pd.read_csv(io.StringIO(root.joinpath("marin_unique_tokens.csv").read_text())).set_index("domain")["unique_tokens"]
    base = page["swarm"].base_domains
    w = sum(s * raw[[f"phase_{p}_{d}" for d in base]].to_numpy() for p, s in enumerate((0.8, 0.2)))
    expected = 1.2e9 * w / counts.loc[list(base)].to_numpy()
    np.testing.assert_allclose(page["epochs"], expected, rtol=1e-9)
    pred, obs = page["loglin"].predict(page["val"])[:, 0], page["val"].losses[:, 0]
    assert page["loglin"].status.name == "converged"
    assert 0.005 < page["loglin"].evaluate(page["val"])["mre"] < 0.02
    assert scipy.stats.spearmanr(pred, obs).statistic > 0.5


# docs/mixtures.md


def _feasible(rng, n, K, lower, upper):
    """n random mixtures with lower <= h <= upper, by rejection from a Dirichlet(1) on the room above the floors."""
    h = lower + (1.0 - lower.sum()) * rng.dirichlet(np.ones(K), size=50 * n)
    h = h[(h <= upper + 1e-12).all(axis=1)]
    assert len(h) >= n
    return h[:n]  # always n rows: one compiled prediction for every check


@pytest.mark.slow  # runs a SLOW_PAGES page
def test_optimal_mixtures_beat_random_feasible_ones(ns, run_page):
    page = run_page("docs/mixtures.md")
    fit, optima, scarce = page["fit"], page["optima"], page["scarce"]
    rng = np.random.default_rng(0)
    K = fit.law.log_c.shape[-1]
    scales = {122.0: 9.998, 1235.0: 46.08, 7000.0: 140.0}
    assert sorted(optima) == sorted(scales)
    lower, upper = np.full(K, 0.02), np.full(K, 0.42)
    for N, D in scales.items():
        best = optima[N]
        h = np.asarray(best.mixture)
        assert abs(h.sum() - 1) < 1e-9 and (h >= lower - 1e-9).all() and (h <= upper + 1e-9).all()
        # the objective is the mean predicted loss there, and no random feasible mixture does better
        assert best.value == pytest.approx(float(np.mean(np.asarray(fit.law.predict(h[None], N, D)))), rel=1e-9)
        others = _feasible(rng, 1000, K, lower, upper)
        assert best.value <= np.asarray(fit.law.predict(others, N, D)).mean(axis=1).min() + 1e-9
    # the quick start's optimum at 1.235B / 46.08B is the page's
    np.testing.assert_allclose(np.asarray(optima[1235.0].mixture), np.asarray(ns["best"].mixture), atol=1e-6)
    # 2B unique arXiv tokens, at most 2 epochs: arXiv's ceiling is 2 x 2 / 46.08, and the optimum can only get worse
    cap = 2 * 2.0 / 46.08
    assert np.asarray(scarce.upper)[fit.info["domains"].index("arxiv")] == pytest.approx(cap, rel=1e-12)
    h = np.asarray(scarce.mixture)
    assert h[fit.info["domains"].index("arxiv")] <= cap + 1e-9 and abs(h.sum() - 1) < 1e-9
    assert scarce.value >= optima[1235.0].value - 1e-12
    others = _feasible(rng, 1000, K, lower, np.asarray(scarce.upper))
    assert scarce.value <= np.asarray(fit.law.predict(others, 1235.0, 46.08)).mean(axis=1).min() + 1e-9


@pytest.mark.slow  # runs a SLOW_PAGES page
def test_calibrated_optimum_of_the_page(run_page):
    page = run_page("docs/mixtures.md")
    cal, held_out, boot = page["cal"], page["held_out"], page["boot22"]
    pl = boot.point.law.params()  # the log-linear law in numpy: exp(c + t . h), at every held-out mixture
    p = np.exp(float(pl["c"][0]) + held_out.mixtures @ np.asarray(pl["t"])[0])
    assert cal.index == int(np.argmin(p)) and cal.predicted == pytest.approx(p.min(), rel=1e-9)
    # the figures the page prints, and the measured run they are checked against
    measured = float(held_out.losses[cal.index, 0])
    assert round(measured, 3) == 1.607  # (the compile flags of the tests move the fit's last digits)
    assert cal.predicted == pytest.approx(1.569, abs=0.002) and cal.method == "cv"
    assert cal.calibrated == pytest.approx(1.649, abs=0.005) and cal.bootstrap_calibrated == pytest.approx(1.605, abs=0.005)
    # both corrections move the prediction towards what the run measured, and the intervals hold it
    assert cal.predicted < cal.bootstrap_calibrated and abs(cal.bootstrap_calibrated - measured) < abs(cal.predicted - measured)
    assert cal.interval[0] <= measured <= cal.interval[1] and cal.bootstrap_interval[0] <= measured <= cal.bootstrap_interval[1]


# links


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page):
    found, seen = set(), {}
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        s = slug(heading)
        found.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return found


@pytest.mark.parametrize("page", [name(p) for p in LINKED])
def test_relative_links_point_to_existing_files(page):
    path = ROOT / page
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, page
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # an absolute URL
        target, _, anchor = link.partition("#")
        dest = (path.parent / target).resolve() if target else path
        assert dest.exists(), f"{page}: {link} -> {dest} does not exist"
        assert ROOT in dest.parents or dest == ROOT, f"{page}: {link} leaves the repository"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page}: {link}: no heading with anchor #{anchor} in {name(dest)}"


def test_docs_are_indexed_and_the_readme_stays_short():
    assert len(README.read_bytes()) <= 10 * 1024, "README.md: keep it under 10 KB; details go to docs/"
    readme_links = re.findall(r"\]\(([^)#\s]+)", README.read_text())
    assert "docs/index.md" in readme_links
    index_links = {(DOCS / link).resolve() for link in re.findall(r"\]\(([^)#\s]+)", (DOCS / "index.md").read_text())}
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert page.resolve() in index_links, f"docs/index.md does not link to {page.name}"
