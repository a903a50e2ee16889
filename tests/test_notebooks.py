"""Every notebook in ``notebooks/`` runs top to bottom, and the numbers it checks hold.

A notebook states its checks by printing lines ``check: NAME = VALUE < BOUND`` (or ``>``, ``<=``, ``>=``); each
is asserted here. The quick start must report its held-out MRE this way.
"""

import operator
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CHECK = re.compile(r"^check: (\w+) = ([-+0-9.eEinfa]+) (<=|>=|<|>) ([-+0-9.eE]+)\s*$")
OPS = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}
REQUIRED = {"quickstart.ipynb": {"heldout_mre"}}


def stdout_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream")


def test_notebooks_found():
    assert "quickstart.ipynb" in [p.name for p in NOTEBOOKS]
    for name in ("quickstart", "paper_results"):  # each notebook is paired with its jupytext text version
        nb = nbformat.read(NOTEBOOKS[0].parent / f"{name}.ipynb", as_version=4)
        text = (NOTEBOOKS[0].parent / f"{name}.md").read_text()
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.source.strip() in text, f"{name}.ipynb has a code cell that {name}.md lacks"


SLOW = {"paper_results.ipynb", "swarm.ipynb"}  # 100 s and 12 s on 2 CPU cores: run with `pytest -m slow`; the quick start runs always


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in NOTEBOOKS], ids=[p.name for p in NOTEBOOKS]
)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    checks = {}
    for line in stdout_of(nb).splitlines():
        m = CHECK.match(line.strip())
        if m:
            name, value, op, bound = m.groups()
            checks[name] = float(value)
            assert OPS[op](float(value), float(bound)), line
    assert REQUIRED.get(path.name, set()) <= set(checks), f"{path.name} did not print checks {REQUIRED[path.name] - set(checks)}"
