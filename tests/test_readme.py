"""The README's commands work as written: the Python quick start runs, and the main-job command's fit runs."""

import contextlib
import io
import json
import pathlib
import re

import mixjax as mj
from mixjax.cli import main

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_setup_commands_are_the_ones_ci_runs():
    bash = blocks("bash")
    assert bash[0].strip() == 'pip install ".[plot]" && mixjax fit slimpajama7 --model-size 122M --tokens 9.998B --val-fraction 0.2'
    assert bash[1].strip() == 'pip install -e ".[test]" && python -m pytest -q -p no:cacheprovider'
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]" && python -m pytest -q -p no:cacheprovider' in ci


def test_main_job_command_runs_and_reports(capsys):
    args = blocks("bash")[0].split("&& mixjax ")[1].split()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args + ["--json"]) == 0
    out = json.loads(buf.getvalue())
    assert out["law"] == "capacity_noise" and out["n_params"] == 36 and out["status"] == "converged"
    # the same fit through the Python API gives the same validation error
    data = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    train, val = data.split_rows(0.2, seed=0)
    f = mj.fit("capacity_noise", train, starts=16, seed=0)
    assert abs(out["val_mre"] - f.evaluate(val)["mre"]) < 1e-12
    assert out["val_mre"] < 0.011


def test_python_quick_start_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks("python")[0]
    ns = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), ns)
    assert ns["fit"].evaluate(ns["val"])["mre"] < 0.0100
    assert abs(ns["best"].mixture.sum() - 1) < 1e-9
    assert (ns["best"].mixture >= 0.02 - 1e-9).all() and (ns["best"].mixture <= 0.42 + 1e-9).all()
