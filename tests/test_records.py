"""The typed records of a bootstrap and a design: round trips, unknown entries, immutability, and a real bootstrap's
record against its statuses and its saved copy."""

import dataclasses
import json
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax
from mixjax import BootstrapRecord, BootstrapResult, SuggestionRecord
from mixjax.fitting import FitResult, objective_value, prepare
from mixjax.laws import DataSummary

TIMINGS = ("seconds_point_fit", "seconds_resamples", "jackknife_seconds")


def bootstrap_record(**changes):
    summary = DataSummary(n_domains=3, n_targets=3, loss_min=np.full(3, 2.0), loss_max=np.full(3, 4.0), loss_mean=np.full(3, 3.0))
    fields = dict(
        law="loglinear", data="synthetic", n_rows=48, data_sha256="ab" * 32, resamples=8, starts=2, warm_start=True,
        point_fit="fitted, 2 starts", chunk_size=None, start_status={"converged": 15, "max_steps": 1, "nonfinite": 0, "out_of_range": 0},
        resample_status={"converged": 8, "max_steps": 0, "nonfinite": 0, "out_of_range": 0}, best_start=[0, 1, 0, 0, 1, 0, 0, 0],
        seconds_point_fit=1.5, seconds_resamples=0.25, backend="cpu", summary=summary,
        slice={"index": 1, "count": 2, "first": 4, "stop": 8},
    )
    return BootstrapRecord(**{**fields, **changes})


def test_bootstrap_record_round_trip_keeps_unknown_entries_and_is_immutable():
    rec = bootstrap_record()
    d = rec.as_dict()
    assert "summary" not in d and "jackknife_seconds" not in d  # the summary has its own header entry; unset timings are left out
    assert d["best_start"] == [0, 1, 0, 0, 1, 0, 0, 0] and d["slice"] == {"index": 1, "count": 2, "first": 4, "stop": 8}
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    back = BootstrapRecord.from_dict(d, summary=rec.summary)
    assert back == rec and back.summary is rec.summary and back.extra == {}
    # a whole bootstrap has no slice and no timings after loading: those keys are absent, not null
    whole = rec.replace(slice=None, seconds_point_fit=None, seconds_resamples=None)
    assert not {"slice", *TIMINGS} & set(whole.as_dict())
    # entries this version does not know are kept and written back
    future = BootstrapRecord.from_dict({**d, "device_count": 4, "mesh": {"axes": ["data"], "shape": [4]}})
    assert future.extra == {"device_count": 4, "mesh": {"axes": ("data",), "shape": (4,)}}
    assert future.as_dict() == {**d, "device_count": 4, "mesh": {"axes": ["data"], "shape": [4]}}
    assert BootstrapRecord.from_dict(future.as_dict()) == future
    # mutable inputs are stored immutably, and the record is frozen
    status = {"converged": 1}
    best = [0, 1]
    frozen = rec.replace(start_status=status, best_start=best)
    status["converged"], best[0] = 99, 99
    assert frozen.start_status == {"converged": 1} and frozen.best_start == (0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.law = "other"
    for name in ("start_status", "resample_status", "slice"):
        with pytest.raises(TypeError):
            getattr(frozen, name)["converged"] = 3
    with pytest.raises(TypeError):
        future.extra["mesh"]["axes"] = ["model"]
    with pytest.raises(TypeError):
        future.extra["new"] = 1
    with pytest.raises(ValueError, match="law"):
        BootstrapRecord(law="")


def test_suggestion_record_round_trip_leaves_out_unset_fields():
    rec = SuggestionRecord(seed=3, min_distance=0.05, min_weight=1e-4, resamples=8, resamples_failed=0, scheme="rows",
                           candidates_nonfinite=0, candidates_absurd=2, absurd_threshold=9.5, noise_rows=48)
    d = rec.as_dict()
    assert list(d) == ["seed", "min_distance", "min_weight", "resamples", "resamples_failed", "scheme", "candidates_nonfinite",
                       "candidates_absurd", "absurd_threshold", "noise_rows"]
    assert d.get("candidates_below_min_weight", 0) == 0 and "phase_distance" not in d and "seconds" not in d
    assert SuggestionRecord.from_dict(d) == rec
    future = SuggestionRecord.from_dict({**d, "pool": ["a", "b"], "weights": {"a": 1}})
    assert future.extra == {"pool": ("a", "b"), "weights": {"a": 1}} and future.seed == 3
    assert future.as_dict() == {**d, "pool": ["a", "b"], "weights": {"a": 1}}
    assert SuggestionRecord.from_dict(future.as_dict()) == future
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.seed = 4
    with pytest.raises(TypeError):
        future.extra["weights"]["a"] = 2
    with pytest.raises(TypeError):
        future.extra["other"] = 1
    assert SuggestionRecord().as_dict() == {}


def test_bootstrap_record_counts_statuses_and_survives_a_file(synthetic, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixjax.MaxStepsWarning)  # the step limit is low on purpose; counted in the record
        res = mixjax.bootstrap("loglinear", synthetic, resamples=8, starts=2, point_starts=2, max_steps=100, seed=0, throw=False)
    rec = res.record
    codes = np.asarray(res.status)
    assert rec.resample_status == {s.name: int(np.count_nonzero(codes == int(s))) for s in mixjax.Status}
    assert sum(rec.start_status.values()) == 8 * 2 and len(rec.best_start) == 8
    assert (rec.law, rec.n_rows, rec.resamples, rec.starts, rec.slice) == ("loglinear", 48, 8, 2, None)
    assert rec.seconds_point_fit >= 0 and rec.seconds_resamples >= 0 and rec.summary is not None
    assert res.info["resample_status"] == dict(rec.resample_status) and res.info["summary"] is rec.summary  # the dict view
    path = tmp_path / "boot.mixfit"
    res.save(path)
    back = BootstrapResult.load(path)
    assert back.record == rec.replace(**dict.fromkeys(TIMINGS))
    # the resamples are the engine's solution type, steps and gradient norms included, and they survive the file
    sol = res.resamples
    assert isinstance(sol, mixjax.Solution) and isinstance(res.point.starts, mixjax.Solution) and FitResult is mixjax.Solution
    assert sol.num_steps.shape == sol.grad_norm.shape == (8,) and sol.law is sol.y and sol.grad_norm is sol.rel_grad
    assert np.all((np.asarray(sol.num_steps) >= 1) & (np.asarray(sol.num_steps) <= 100))
    for k in ("loss", "status", "num_steps", "grad_norm"):
        np.testing.assert_array_equal(np.asarray(getattr(back.resamples, k)), np.asarray(getattr(sol, k)))
    arrays, _ = prepare(res.point.law, synthetic, dtype=res.point.config.dtype)
    for b in range(8):  # each loss is the objective of that resample's law under its row multiplicities
        law_b = jax.tree_util.tree_map(lambda x: x[b] if eqx.is_array(x) else x, res.laws)
        J = objective_value(law_b, arrays, jnp.asarray(res.weights[b], arrays.y.dtype), res.point.config)
        assert float(J) == pytest.approx(float(res.loss[b]), rel=1e-9)
    assert not set(TIMINGS) & set(back.info)
    for f in dataclasses.fields(DataSummary):
        np.testing.assert_array_equal(getattr(back.record.summary, f.name), getattr(rec.summary, f.name))
    # the jackknife's time replaces the record (the result is not frozen, the record is)
    before = res.record
    res.jackknife()
    assert before.jackknife_seconds is None and res.record.jackknife_seconds >= 0
    assert res.record.replace(jackknife_seconds=None) == before
    res.save(tmp_path / "again.mixfit")
    assert (tmp_path / "again.mixfit").read_bytes() != path.read_bytes()  # now with the jackknife
    assert BootstrapResult.load(tmp_path / "again.mixfit").record == back.record
