"""The API reference is generated from the docstrings and covers the whole public namespace.

`docs/api.md` names each public object of ``mixjax`` once (``::: mixjax.NAME``); ``mkdocs build --strict`` renders
it with mkdocstrings, and the rendered page must carry each object's own docstring (read here from the object).
"""

import html
import re
import subprocess
import sys
import types
from pathlib import Path

import mixjax

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api.md"


def _public_objects() -> dict[str, object]:
    return {n: getattr(mixjax, n) for n in dir(mixjax)
            if not n.startswith("_") and not isinstance(getattr(mixjax, n), types.ModuleType) and (callable(getattr(mixjax, n)))}


def test_every_public_object_is_in_the_reference():
    listed = re.findall(r"^::: mixjax\.(\w+)$", API.read_text(), flags=re.M)
    assert len(listed) == len(set(listed)), "an object is listed twice"
    public = _public_objects()
    missing = sorted(set(public) - set(listed))
    unknown = sorted(set(listed) - set(public))
    assert not missing, f"public objects missing from docs/api.md: {missing}"
    assert not unknown, f"docs/api.md lists names mixjax does not export: {unknown}"


def _first_sentence(obj) -> str:
    doc = " ".join((obj.__doc__ or "").replace("`", "").replace("*", "").split())  # markup is rendered, not shown
    return doc.split(". ")[0][:60]


def test_reference_builds_strictly_with_each_docstring(tmp_path):
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    page = html.unescape(re.sub(r"<[^>]+>", "", (site / "api" / "index.html").read_text()))
    text = " ".join(page.replace("`", "").split())
    for name in ("fit", "bootstrap", "compare", "optimize_mixture", "MixtureData", "Fit", "AbstractLaw"):
        want = _first_sentence(getattr(mixjax, name))
        assert want and want in text, f"the rendered reference lacks the docstring of mixjax.{name}: {want!r}"
