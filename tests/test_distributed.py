"""Batched fits give the same answer however the batch is laid out: each work item draws from its own index, so
chunks, slices merged, 8 devices and 2 processes all reproduce the one-run, one-device answer (computed here)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import mixjax
from mixjax.fitting import init_starts, prepare, summarize
from mixjax.laws import registered
from mixjax.resampling import BootstrapResult, merge, resample_weights

#: Laws that are linear in their parameters (each refit has one well-defined minimum, reached to rounding): the
#: same source runs here and in the subprocesses.
LAW_SOURCE = textwrap.dedent(
    """
    from typing import ClassVar
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import mixjax
    from mixjax.laws import AbstractLaw

    class MixTokensLaw(AbstractLaw):
        \"\"\"pred_j = sum_k W_jk h_k + s_j log D.\"\"\"

        W: jax.Array
        s: jax.Array
        name: ClassVar[str] = "test_mix_tokens"
        per_domain: ClassVar[bool] = False
        uses_tokens: ClassVar[bool] = True

        @classmethod
        def init(cls, key, summary):
            a, b = jax.random.split(key)
            return cls(jax.random.uniform(a, (summary.n_targets, summary.n_domains), minval=0.5, maxval=3.0),
                       0.2 * jax.random.normal(b, (summary.n_targets,)))

        def params(self):
            return {"W": self.W, "s": self.s}

        def __call__(self, mixture, model_size, n_tokens):
            return self.W @ mixture + self.s * jnp.log(n_tokens)

    class MixLaw(AbstractLaw):
        \"\"\"pred_j = sum_k W_jk h_k.\"\"\"

        W: jax.Array
        name: ClassVar[str] = "test_mix"
        per_domain: ClassVar[bool] = False

        @classmethod
        def init(cls, key, summary):
            return cls(jax.random.uniform(key, (summary.n_targets, summary.n_domains), minval=0.5, maxval=3.0))

        def params(self):
            return {"W": self.W}

        def __call__(self, mixture, model_size, n_tokens):
            return self.W @ mixture
    """
)

#: The data the laws are fitted to, and the settings of the bootstrap.
SETUP = LAW_SOURCE + textwrap.dedent(
    """
    def make_data():
        rng = np.random.default_rng(7)
        h = rng.dirichlet(np.ones(3), 10)
        ids = np.repeat(np.arange(10), 3)
        D = np.tile([1e9, 2e9, 4e9], 10)
        y = h[ids] @ np.array([[2.0, 1.0, 3.0], [1.5, 2.5, 0.5]]).T - 0.1 * np.log(D / 1e9)[:, None]
        y = y + 0.03 * rng.normal(size=y.shape)
        return mixjax.from_arrays(h[ids], y, 1e8, D, mixture_id=ids, targets=["t0", "t1"], name="mix_tokens")

    data = make_data()
    BOOT = dict(resamples=8, starts=2, seed=5, point_starts=4, max_steps=300)
    """
)

#: What a subprocess reports: the bootstrap's numbers and its full-data fit's (process 0 prints them).
REPORT = textwrap.dedent(
    """
    import json
    from mixjax import distributed
    boot = mixjax.bootstrap(MixTokensLaw, data, **BOOT)
    fit = boot.point  # a mixjax.fit of BOOT["point_starts"] starts
    if distributed.is_main():
        print(json.dumps({
            "devices": jax.local_device_count(), "processes": jax.process_count(),
            "boot_loss": np.asarray(boot.loss).tolist(), "boot_W": np.asarray(boot.laws.W).tolist(),
            "weights": np.asarray(boot.weights).tolist(), "status": np.asarray(boot.status).tolist(),
            "fit_starts_loss": np.asarray(fit.starts.loss).tolist(), "fit_W": np.asarray(fit.law.W).tolist(),
            "shards": SHARDS,
        }))
    """
)

_ns: dict = {"__name__": __name__}
exec(compile(SETUP, "<setup>", "exec", dont_inherit=True), _ns)  # the law, data and settings of the subprocesses
MixTokensLaw, MixLaw, data, BOOT = _ns["MixTokensLaw"], _ns["MixLaw"], _ns["data"], _ns["BOOT"]

RTOL = 1e-7  # objectives of converged refits laid out differently: equal up to rounding (observed ~1e-12)
ATOL = 1e-6  # their parameters


def _leaves_close(a, b, atol=ATOL):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def _same_bootstrap(ref: BootstrapResult, other: BootstrapResult):
    np.testing.assert_array_equal(other.weights, ref.weights)
    np.testing.assert_array_equal(other.status, ref.status)
    np.testing.assert_allclose(other.loss, ref.loss, rtol=RTOL)
    _leaves_close(ref.laws, other.laws)  # (which start wins a tie of converged starts may differ; its law may not)


@pytest.fixture(scope="module")
def one_run():
    return mixjax.bootstrap(MixTokensLaw, data, **BOOT)


def test_work_items_draw_from_their_own_index():
    """Starts and resample weights of items lo..hi-1 drawn alone are those of the whole batch, bit for bit."""
    arrays, _ = prepare(MixTokensLaw, data)
    summary = summarize(arrays, data)
    key = jax.random.PRNGKey(11)
    whole = init_starts(MixTokensLaw, key, 12, summary)
    part = init_starts(MixTokensLaw, key, 5, summary, first=4)
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(part)):
        np.testing.assert_array_equal(np.asarray(a)[4:9], np.asarray(b))
    assert not np.array_equal(np.asarray(whole.W)[:5], np.asarray(part.W))
    for scheme in ("rows", "mixtures", "stratified"):
        w = resample_weights(data, 10, scheme, seed=3)
        np.testing.assert_array_equal(resample_weights(data, 4, scheme, seed=3, first=6), w[6:10])
        assert len({r.tobytes() for r in w}) == 10  # the per-index streams differ


def test_chunks_and_slices_give_the_one_run_answer(one_run, tmp_path):
    chunked = mixjax.bootstrap(MixTokensLaw, data, chunk_size=4, **BOOT)
    _same_bootstrap(one_run, chunked)
    parts = [mixjax.bootstrap(MixTokensLaw, data, part=(i, 3), chunk_size=4, **BOOT) for i in (2, 0, 1)]
    assert [p.n_resamples for p in parts] == [3, 2, 3]
    merged = merge(parts)
    _same_bootstrap(one_run, merged)
    assert merged.info["resample_status"] == one_run.info["resample_status"]
    assert merged.info["start_status"] == one_run.info["start_status"]
    assert "slice" not in merged.info and merged.n_resamples == BOOT["resamples"]
    # a missing, repeated or mismatched part is a clear error
    with pytest.raises(ValueError, match=r"slice\(s\) 1/3 missing"):
        merge(parts[:2])
    with pytest.raises(ValueError, match="slice 2/3 is given twice"):
        merge(parts + parts[:1])
    other = dataclasses.replace(parts[2], seed=6)  # slice 1/3 of a bootstrap with another seed
    with pytest.raises(ValueError, match="not a slice of the same bootstrap.*seed 5 vs 6"):
        merge([parts[0], parts[1], other])
    with pytest.raises(ValueError, match="holds a whole bootstrap"):
        merge([one_run])
    # the command line joins part files into the file one run writes (same header, same resamples)
    from mixjax.cli import main
    from mixjax.io import read_header

    names = []
    for p in parts:
        names.append(str(tmp_path / f"part{p.info['slice']['index']}.mixfit"))
        p.save(names[-1])
    chunked.save(tmp_path / "one.mixfit")  # the run with the parts' chunk size: the header records it
    with registered(MixTokensLaw):
        assert main(["merge", *names, "--save", str(tmp_path / "merged.mixfit")]) == 0
        assert main(["merge", *names[:2], "--save", str(tmp_path / "bad.mixfit")]) == 2
        back = BootstrapResult.load(tmp_path / "merged.mixfit")
    assert not (tmp_path / "bad.mixfit").exists()
    _same_bootstrap(one_run, back)
    h1, h2 = read_header(tmp_path / "one.mixfit"), read_header(tmp_path / "merged.mixfit")
    assert {k: v for k, v in h1.items() if k != "checksums"} == {k: v for k, v in h2.items() if k != "checksums"}


def _run_script(script: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)


def _report(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def _check_report(r: dict, one_run: BootstrapResult):
    fit = one_run.point
    np.testing.assert_array_equal(np.asarray(r["weights"]), one_run.weights)
    np.testing.assert_array_equal(np.asarray(r["status"]), one_run.status)
    np.testing.assert_allclose(r["boot_loss"], one_run.loss, rtol=RTOL)
    np.testing.assert_allclose(r["boot_W"], np.asarray(one_run.laws.W), rtol=0, atol=ATOL)
    np.testing.assert_allclose(r["fit_starts_loss"], np.asarray(fit.starts.loss), rtol=RTOL)
    np.testing.assert_allclose(r["fit_W"], np.asarray(fit.law.W), rtol=0, atol=ATOL)


#: Counts the devices each batch of the bootstrap and the fit is split over.
SPY = textwrap.dedent(
    """
    import mixjax.fitting as F
    SHARDS = []
    _batch = F._solve_batch
    def _spy(laws, weights, problem, config, *rest):
        SHARDS.append([int(weights.shape[0]), len(weights.sharding.device_set)])
        return _batch(laws, weights, problem, config, *rest)
    F._solve_batch = _spy
    """
)


def test_eight_devices_give_the_one_device_answer(one_run):
    flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    r = _report(_run_script(SETUP + SPY + REPORT, env))
    assert r["devices"] == 8 and r["processes"] == 1
    # the full-data fit (4 starts, padded to one per device) and the resamples (8 x 2 members) split over 8 devices
    assert r["shards"] == [[8, 8], [16, 8]]
    _check_report(r, one_run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes, each compiling its programs: run with -m slow
def test_two_processes_give_the_one_process_answer(one_run):
    port = _free_port()
    head = f"import jax\njax.distributed.initialize('localhost:{port}', num_processes=2, process_id=int(__import__('sys').argv[1]))\n"
    script = head + SETUP + "SHARDS = None\n" + REPORT
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    assert outs[1].returncode == 0, outs[1].stderr[-3000:]
    assert not [line for line in outs[1].stdout.splitlines() if line.startswith("{")]  # only process 0 reports
    r = _report(outs[0])
    assert r["processes"] == 2
    _check_report(r, one_run)


# --------------------------------------------------------------------------- comparisons cut into slices
#: A comparison of the two linear laws: 3 folds by mixture and the fit to all rows, so 2 x 4 cells.
COMPARE = dict(cv="mixtures:3", starts=2, max_steps=300, seed=1)
COMPARE_ARGS = ["--laws", "test_mix_tokens,test_mix", "--cv", "mixtures:3", "--starts", "2", "--max-steps", "300", "--seed", "1"]


def _same_numbers(a, b, path="comparison"):
    """Two JSON-like objects equal, floats to RTOL relative (and None where the other is None)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            _same_numbers(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {a!r} vs {b!r}"
        for j, (x, y) in enumerate(zip(a, b)):
            _same_numbers(x, y, f"{path}[{j}]")
    elif isinstance(a, float) and not isinstance(b, bool) and isinstance(b, (int, float)):
        assert b == pytest.approx(a, rel=RTOL, abs=1e-12), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.fixture(scope="module")
def laws_registered():
    with registered(MixTokensLaw), registered(MixLaw):
        yield


@pytest.fixture(scope="module")
def compare_one_run(laws_registered):
    return mixjax.compare(data, [MixTokensLaw, MixLaw], **COMPARE)


@pytest.fixture(scope="module")
def compare_parts(laws_registered):
    return [mixjax.compare(data, [MixTokensLaw, MixLaw], part=(i, 4), **COMPARE) for i in (3, 1, 0, 2)]


def test_slice_cells_cover_the_grid_once_in_law_major_runs():
    from mixjax.comparison import slice_cells

    for n_laws, n_groups, count in ((2, 4, 4), (3, 6, 5), (1, 2, 2), (5, 1, 5)):
        cells = [slice_cells(n_laws, n_groups, i, count) for i in range(count)]
        flat = [c for part in cells for c in part]
        assert flat == [(j, g) for j in range(n_laws) for g in range(n_groups)]
        assert max(map(len, cells)) - min(map(len, cells)) <= 1
    assert slice_cells(2, 4, 1, 4) == [(0, 2), (0, 3)]
    with pytest.raises(ValueError, match="9 slices of 8 cells: every slice needs at least one cell"):
        slice_cells(2, 4, 0, 9)


def test_compare_slices_merge_to_the_one_run_comparison(compare_one_run, compare_parts, tmp_path, capsys):
    from mixjax.cli import main
    from mixjax.comparison import ComparisonPart
    from mixjax.comparison import merge as merge_comparison

    assert [(c.law, c.group) for c in compare_parts[1].cells] == [("test_mix_tokens", 2), ("test_mix_tokens", 3)]
    merged = merge_comparison(compare_parts)
    ref = compare_one_run.as_dict()
    _same_numbers(ref, merged.as_dict())
    assert [s.law for s in merged.scores] == [s.law for s in compare_one_run.scores]
    for a, b in zip(compare_one_run.scores, merged.scores):  # the fitted laws, one per split and the all-rows fit
        assert len(a.fits) == len(b.fits) == 4
        _leaves_close(a.fits, b.fits)
    # part files: the merge of the files is the merge in memory (without the fitted laws), printed as compare prints it
    names = []
    for p in compare_parts:
        names.append(str(tmp_path / f"part{p.index}.json"))
        p.save(names[-1])
    back = merge_comparison([ComparisonPart.load(x) for x in names], names=names)
    assert back.as_dict() == merged.as_dict() and back.scores[0].fits == []
    capsys.readouterr()
    assert main(["merge", *names, "--json", "--save", str(tmp_path / "merged.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "merged.json").read_text())
    _same_numbers(json.loads(json.dumps(ref)), printed)
    # the command line cuts the same cells: its slice 1/4 holds the numbers of the Python part
    csv = tmp_path / "mix.csv"
    data.to_dataframe().to_csv(csv, index=False)
    assert main(["compare", str(csv), *COMPARE_ARGS, "--slice", "1/4", "--save", str(tmp_path / "cli1.json")]) == 0
    cli = ComparisonPart.load(tmp_path / "cli1.json")
    assert (cli.index, cli.count) == (1, 4)
    for a, b in zip(compare_parts[1].cells, cli.cells):
        assert (a.law, a.group, a.status) == (b.law, b.group, b.status)
        np.testing.assert_allclose(b.pred, a.pred, rtol=RTOL)


def test_bad_compare_merges_are_refused(compare_parts, tmp_path, capsys):
    import zipfile

    from mixjax.cli import main
    from mixjax.comparison import merge as merge_comparison

    by = {p.index: p for p in compare_parts}
    with pytest.raises(ValueError, match=r"slice\(s\) 2/4 missing: 3 of 4 parts given"):
        merge_comparison([by[0], by[1], by[3]])
    with pytest.raises(ValueError, match="slice 1/4 is given twice: part 1 and part 4"):
        merge_comparison(compare_parts + [by[1]])
    other = dataclasses.replace(by[0], plan=dataclasses.replace(by[0].plan, settings={**by[0].plan.settings, "seed": 2}))
    with pytest.raises(ValueError, match="part 1 is not a slice of the same comparison as part 0: seed 1 vs 2"):
        merge_comparison([by[1], other, by[2], by[3]])
    one_law = dataclasses.replace(by[0], plan=dataclasses.replace(by[0].plan, laws=by[0].plan.laws[:1]))
    with pytest.raises(ValueError, match=r"laws \['test_mix_tokens', 'test_mix'\] vs \['test_mix_tokens'\]"):
        merge_comparison([by[1], one_law])
    moved = dataclasses.replace(by[3], index=2)  # slice 3's cells labelled slice 2
    with pytest.raises(ValueError, match=r"part 2: slice 2/4 should hold the cells \[\('test_mix', 0\), \('test_mix', 1\)\]"):
        merge_comparison([by[0], by[1], moved, by[3]])
    with pytest.raises(ValueError, match="different numbers of slices"):
        merge_comparison([by[0], dataclasses.replace(by[1], count=5)])
    # on the command line: one line naming the fault, nothing written
    names = []
    for p in compare_parts:
        names.append(str(tmp_path / f"part{p.index}.json"))
        p.save(names[-1])
    boot = tmp_path / "boot.mixfit"
    with zipfile.ZipFile(boot, "w") as z:
        z.writestr("header.json", "{}")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    out = tmp_path / "merged.json"
    capsys.readouterr()
    cases = [
        (names[:3], "slice(s) 2/4 missing"),
        ([*names, names[0]], "slice 3/4 is given twice"),
        ([*names[:3], str(boot)], f"the parts mix a bootstrap part ({boot}) and a comparison part"),
        ([*names[:3], str(tmp_path / "other.json")], "other.json is not a comparison part file"),
    ]
    for files, message in cases:
        assert main(["merge", *files, "--save", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not out.exists()
    assert main(["compare", "whatever.csv", *COMPARE_ARGS, "--slice", "0/4"]) == 2
    assert "--slice fits part of the comparison: give --save PART" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "bootstrap", "compare", "optimize", "suggest"])
def test_every_fitting_command_takes_the_distributed_options_first(command, capsys):
    """The five commands share the options and start jax.distributed before anything else (here: refused at once)."""
    from mixjax.cli import main

    assert main([command, "no-such-data.csv", "--num-processes", "2", "--process-id", "1"]) == 2
    err = capsys.readouterr().err
    assert f"mixjax {command}: error: a run over several processes needs the coordinator's address" in err, err


@pytest.mark.slow  # two processes, each compiling its programs: run with -m slow
def test_two_process_compare_command_gives_the_one_process_comparison(laws_registered, tmp_path, capsys):
    from mixjax.cli import main

    csv = tmp_path / "mix.csv"
    data.to_dataframe().to_csv(csv, index=False)
    capsys.readouterr()
    assert main(["compare", str(csv), *COMPARE_ARGS, "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    port = _free_port()
    script = LAW_SOURCE + textwrap.dedent(
        """
        import sys
        from mixjax.cli import main
        from mixjax.laws import registered
        with registered(MixTokensLaw), registered(MixLaw):
            sys.exit(main(sys.argv[1:]))
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", script, "compare", str(csv), *COMPARE_ARGS, "--json",
                               "--save", str(tmp_path / f"out{i}.json"), "--coordinator", f"localhost:{port}",
                               "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, o, e))
    assert outs[0][0] == 0, outs[0][2][-3000:]
    assert outs[1][0] == 0, outs[1][2][-3000:]
    assert outs[1][1].strip() == "" and not (tmp_path / "out1.json").exists()  # only process 0 prints and writes
    printed = json.loads(outs[0][1])
    assert printed == json.loads((tmp_path / "out0.json").read_text())
    _same_numbers(ref, printed)
