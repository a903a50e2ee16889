"""Property-based tests of the command line on damaged input: corrupted CSV tables, bad arguments and corrupted
saved fits. Whatever the input, a run ends with status 0 or 2, never prints a traceback, prints strict JSON (no NaN
or Infinity) when it succeeds, and writes nothing at its output path when it fails. Where the input decides the
outcome (arguments drawn from fixed pools), each example's status is checked against the expected one; where it
cannot be told in advance (corrupted bytes), each property test checks that its own examples reached both outcomes.

Every fit here has the same shape (8 runs, 3 domains, 3 targets, one start, 5 Adam steps of the log-linear law), so
one compiled program serves all examples."""

import collections
import contextlib
import io
import json
import os
import tempfile
import zipfile

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "mixjax-hypothesis"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st  # noqa: E402

import mixjax  # noqa: E402
from mixjax.cli import main  # noqa: E402

QUICK = ["--law", "loglinear", "--starts", "1", "--max-steps", "5", "--optimizer", "adam"]
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

HEADER = ["weight_a", "weight_b", "weight_c", "model_size", "n_tokens", "a_loss", "b_loss", "c_loss"]


def base_rows(n=8):
    rng = np.random.default_rng(0)
    h = rng.dirichlet(np.ones(3), n)
    return [[*(f"{x:.17g}" for x in r), "1e8", "2e9", f"{3.0 - r[0]:.6f}", f"{3.2 - r[1]:.6f}", f"{2.9 - 0.5 * r[2]:.6f}"] for r in h]


def to_csv(header, rows) -> bytes:
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode()


def run(*args):
    """``mixjax ARGS`` in-process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def statuses(strategy, body) -> collections.Counter:
    """Run ``body(example)`` on every example that ``strategy`` draws (under SETTINGS); the count of the statuses it
    returned. The count belongs to the calling test alone, so what it asserts does not depend on test order."""
    seen: collections.Counter = collections.Counter()

    @SETTINGS
    @given(strategy)
    def each(example):
        seen[body(example)] += 1

    each()
    return seen


def check(rc, out, err, output=None):
    """The contract of every run, success or failure."""
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err and "Traceback" not in out
    if rc == 2:
        lines = err.strip().splitlines()
        assert lines and lines[-1].startswith("mixjax") and ": error: " in lines[-1], err
        assert out == ""
        if output is not None:
            assert not os.path.exists(output), "a failed run wrote its output file"
            assert not [p for p in os.listdir(os.path.dirname(output)) if p.startswith(".")], "temporary file left behind"
    elif out.strip().startswith("{"):
        json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in the output"))


BAD_VALUES = ["", "nan", "NaN", "inf", "-inf", "-1", "0", "1e400", "-1e-300", "abc", "1.2.3", "0x10", "1,5", '"', "2.5e", " ", "\t"]
JUNK = st.binary(min_size=1, max_size=40)


@st.composite
def corrupted_csv(draw):
    """The base table with one or more corruptions: bad cell values, a duplicated or missing or renamed column, an
    extra column that looks like a domain, rows cut short or long, binary junk, or an empty file."""
    header, rows = list(HEADER), [list(r) for r in base_rows()]
    kinds = draw(st.lists(st.sampled_from(["cell", "cell", "dup", "drop", "rename", "extra", "ragged", "junk", "empty", "zero"]), min_size=1, max_size=3))
    for kind in kinds:
        if kind == "cell":
            r, c = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
            if c < len(rows[r]):
                rows[r][c] = draw(st.sampled_from(BAD_VALUES))
        elif kind == "dup":
            c = draw(st.integers(0, len(header) - 1))
            header.append(header[c])
            for r in rows:
                r.append(r[c] if c < len(r) else "1")
        elif kind == "drop" and len(header) > 1:
            c = draw(st.sampled_from([i for i, h in enumerate(header) if not h.endswith("_loss")] or [0]))
            header.pop(c)
            for r in rows:
                if c < len(r):
                    r.pop(c)
        elif kind == "rename":
            c = draw(st.integers(0, len(header) - 1))
            header[c] = draw(st.sampled_from(["weight_", "_loss", "loss", "weight_a.1", "a_loss.1", "weight_decay", "", "weight_b"]))
        elif kind == "extra":
            header.append(draw(st.sampled_from(["weight_decay", "weight_steps", "train_loss", "mixture_id", "split"])))
            v = draw(st.sampled_from(["0.1", "300", "0", "2.5", "x"]))
            for r in rows:
                r.append(v)
        elif kind == "ragged":
            r = draw(st.integers(0, len(rows) - 1))
            rows[r] = rows[r][: draw(st.integers(0, len(rows[r])))] + draw(st.sampled_from([[], ["1"], ["1", "2"]]))
        elif kind == "zero":
            c = draw(st.integers(0, 2))
            for r in rows:
                if c < len(r):
                    r[c] = "0"
    data = to_csv(header, rows)
    if "junk" in kinds:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(JUNK) + data[at:]
    if "empty" in kinds:
        data = b""
    return data


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_fit_on_corrupted_csv(workdir):
    src, output = workdir / "data.csv", workdir / "out" / "fit.mixfit"
    output.parent.mkdir(exist_ok=True)

    def one(content):
        src.write_bytes(content)
        if output.exists():
            output.unlink()
        rc, out, err = run("fit", src, *QUICK, "--json", "--output", output)
        check(rc, out, err, output)
        if rc == 0:
            res = json.loads(out)
            f = mixjax.load_fit(output)  # what was written loads back and is the fit reported
            assert res["n_cells_used"]["train"] >= 1 and res["targets"] == f.info["targets"]
            for k, v in f.params().items():
                np.testing.assert_allclose(np.ravel(res["params"][k]), np.ravel(v), rtol=1e-12, atol=0, err_msg=k)
        return rc

    seen = statuses(corrupted_csv(), one)
    # the generator is neither so wild that every table is refused nor so tame that none is
    assert seen[0] >= 2 and seen[2] >= 5, dict(seen)


ARG_POOL = {
    "--starts": ["0", "-3", "1", "x", "1e3"],
    "--max-steps": ["0", "5", "-1", "nan"],
    "--val-fraction": ["0", "1", "-0.5", "0.25", "nan", "inf", "abc", "0.999"],
    "--sum-tol": ["-1", "0", "0.5", "nan", "inf", "x"],
    "--domains": ["a,b,c", "a,b", "a,,c", "z", "a,a,b,c", ""],
    "--targets": ["a", "a,b,c", "zz", "loss", ",", "a,a"],
    "-N": ["122M", "1e8", "0", "-5", "1.2.3", "x", "1e400", "100M"],
    "-D": ["2B", "2e9", "0", "abc", "3T"],
    "--objective": ["mse", "relative", "huber_log", "bogus"],
    "--dtype": ["float64", "float16"],
    "--output": ["OUT/f.mixfit", "OUT/missing/f.mixfit", "OUT", ""],
    "--eval": ["DATA", "OUT", "pile4", "nonexistent.csv"],
}
# The values of ARG_POOL that the base table (8 runs at 1e8 parameters, 2e9 tokens, domains and targets a, b, c, rows
# summing to 1 only to rounding) accepts. Every other value is refused on its own: out of range or unparsable
# numbers, --sum-tol 0 (the rows are off by rounding), --domains a,b (those rows sum to less than 1), a scale with no
# rows (122M, 3T), 0.999 of 8 rows held out (nothing left to fit), an output folder that is missing or is a
# directory, an --eval table with other domains, a missing --eval file.
ACCEPTED = {
    "--starts": {"1"}, "--max-steps": {"5"}, "--val-fraction": {"0.25"}, "--sum-tol": {"0.5"}, "--domains": {"a,b,c"},
    "--targets": {"a", "a,b,c"}, "-N": {"1e8", "100M"}, "-D": {"2B", "2e9"}, "--objective": {"mse", "relative", "huber_log"},
    "--dtype": {"float64"}, "--output": {"OUT/f.mixfit"}, "--eval": {"DATA"},
}


def expected_fit_status(chosen: dict) -> int:
    """0 when every option takes an accepted value and --eval and --val-fraction are not both given, else 2."""
    if "--eval" in chosen and "--val-fraction" in chosen:
        return 2
    return 0 if all(v in ACCEPTED[k] for k, v in chosen.items()) else 2


@st.composite
def fit_args(draw):
    keys = draw(st.lists(st.sampled_from(sorted(ARG_POOL)), max_size=4, unique=True))
    return {k: draw(st.sampled_from(ARG_POOL[k])) for k in keys}


def test_fit_with_bad_arguments(workdir):
    src = workdir / "base.csv"
    src.write_bytes(to_csv(HEADER, base_rows()))
    outdir = workdir / "args_out"
    outdir.mkdir(exist_ok=True)

    def one(chosen):
        for p in outdir.iterdir():
            p.unlink()
        args = [x.replace("OUT", str(outdir)).replace("DATA", str(src)) for k, v in chosen.items() for x in (k, v)]
        rc, out, err = run("fit", src, *QUICK, *args, "--json")
        output = args[args.index("--output") + 1] if "--output" in args else None
        check(rc, out, err, output if output and not os.path.isdir(output) and os.path.isdir(os.path.dirname(output) or ".") else None)
        assert rc == expected_fit_status(chosen), (chosen, err)
        if rc == 0:
            saved = output if output else None
            assert sorted(p.name for p in outdir.iterdir()) == (["f.mixfit"] if saved else [])
            if saved:
                assert mixjax.load_fit(saved).loss == pytest.approx(json.loads(out)["loss"], rel=1e-12)
        return rc

    seen = statuses(fit_args(), one)
    assert seen[0] >= 2 and seen[2] >= 5, dict(seen)


@st.composite
def other_command(draw):
    cmd = draw(st.sampled_from(["laws", "datasets", "predict", "plot", "bogus", ""]))
    if cmd == "laws":
        return ["laws", "-K", draw(st.sampled_from(["0", "-1", "3", "x", "100000"]))]
    if cmd == "predict":
        mix = draw(st.sampled_from(["0.2,0.3,0.5", "a=1", "a=0.5,b=0.6", "1,1,1", "nan,0,1", "-1,1,1", "x", "z=1", "", "0.3,0.3"]))
        return ["predict", "FIT", "--mixture", mix, "--json"]
    if cmd == "plot":
        kind = draw(st.sampled_from(["pred-vs-obs", "line", "ternary", "bogus"]))
        return ["plot", kind, "FIT", "--data", draw(st.sampled_from(["pile4", "DATA", "OUT"])), "--out", draw(st.sampled_from(["OUT/p.txt", "OUT/missing/p.png", "OUT"])), "--json"]
    return [cmd] if cmd else []


# The only well-formed commands the generator above can draw: every other one has a bad value (domain count out of
# 1..10000 or not a number, weights that do not sum to 1 or are not finite or name no domain of the fit, an unknown
# command or plot kind) or, for every plot, an --out that is not a .png/.svg/.pdf file in an existing folder.
# The saved fit has domains a, b, c and one scale (1e8 parameters, 2e9 tokens), which predict uses by default.
WELL_FORMED = {("laws", "-K", "3"): None, ("datasets",): None,
               ("predict", "FIT", "--mixture", "0.2,0.3,0.5", "--json"): [0.2, 0.3, 0.5],
               ("predict", "FIT", "--mixture", "a=1", "--json"): [1.0, 0.0, 0.0]}


@pytest.fixture(scope="module")
def saved_fit(workdir):
    src = workdir / "base.csv"
    src.write_bytes(to_csv(HEADER, base_rows()))
    rc, out, err = run("fit", src, *QUICK, "--output", workdir / "good.mixfit", "--json")
    assert rc == 0, err
    return workdir / "good.mixfit"


def test_other_commands_with_bad_arguments(workdir, saved_fit):
    import jax.numpy as jnp

    law = mixjax.load_fit(saved_fit).law

    def one(drawn):
        args = [a.replace("FIT", str(saved_fit)).replace("DATA", str(workdir / "base.csv")).replace("OUT", str(workdir)) for a in drawn]
        rc, out, err = run(*args)
        if not args:
            assert rc == 2 and "usage: mixjax" in out  # no command: the help, and status 2
            return rc
        check(rc, out, err)
        assert rc == (0 if tuple(drawn) in WELL_FORMED else 2), (drawn, err)
        mix = WELL_FORMED.get(tuple(drawn))
        if rc == 0 and mix is not None:  # the law's own prediction at the fit's scale: 100M parameters, 2B tokens
            ref = np.asarray(law.predict(jnp.asarray([mix]), 100.0, 2.0))[0]
            np.testing.assert_allclose(list(json.loads(out)["predicted"].values()), ref, rtol=1e-12, atol=0)
        return rc

    seen = statuses(other_command(), one)
    assert seen[0] >= 2 and seen[2] >= 5, dict(seen)


@st.composite
def corruption(draw):
    return draw(st.sampled_from(["flip", "flip", "truncate", "append", "zero_run", "member_flip"])), draw(st.integers(0, 10**9)), draw(st.integers(1, 255))


def test_corrupted_fit_files(workdir, saved_fit):
    raw0 = saved_fit.read_bytes()
    rc, out, err = run("predict", saved_fit, "--mixture", "0.2,0.3,0.5", "--json")
    assert rc == 0, err
    intact = json.loads(out)["predicted"]

    def one(how):
        kind, pos, byte = how
        raw = bytearray(raw0)
        if kind == "flip":
            raw[pos % len(raw)] ^= byte
        elif kind == "truncate":
            raw = raw[: pos % len(raw)]
        elif kind == "append":
            raw += bytes([byte]) * (1 + pos % 50)
        elif kind == "zero_run":
            at = pos % len(raw)
            raw[at : at + 16] = bytes(len(raw[at : at + 16]))
        else:  # a valid zip whose law member has a changed byte (the zip's own CRC recomputed)
            with zipfile.ZipFile(saved_fit) as z:
                members = {n: bytearray(z.read(n)) for n in z.namelist()}
            law = members["law.eqx"]
            law[pos % len(law)] ^= byte
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for n, b in members.items():
                    z.writestr(n, bytes(b))
            raw = bytearray(buf.getvalue())
        bad = workdir / "bad.mixfit"
        bad.write_bytes(bytes(raw))
        rc, out, err = run("predict", bad, "--mixture", "0.2,0.3,0.5", "--json")
        check(rc, out, err)
        if kind in ("member_flip", "truncate"):  # a changed law (checksum) or a zip cut short is always refused
            assert rc == 2, (kind, err)
        if rc == 0:  # a damaged file is either refused or, where the damage missed everything it reads, predicts as before
            assert json.loads(out)["predicted"] == intact, how
        return rc

    seen = statuses(corruption(), one)
    assert seen[2] >= 5, dict(seen)
