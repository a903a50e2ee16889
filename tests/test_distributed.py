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

#: A law that is linear in its parameters (each refit has one well-defined minimum, reached to rounding), and the
#: data it is fitted to: the same source runs here and in the subprocesses.
SETUP = textwrap.dedent(
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
MixTokensLaw, data, BOOT = _ns["MixTokensLaw"], _ns["data"], _ns["BOOT"]

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
    def _spy(laws, weights, problem, config):
        SHARDS.append([int(weights.shape[0]), len(weights.sharding.device_set)])
        return _batch(laws, weights, problem, config)
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
