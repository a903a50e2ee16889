"""The package's shape: no name is both a module and a function, and importing it changes no global setting."""

import importlib
import pkgutil
import subprocess
import sys

import mixjax


def test_no_name_is_both_a_module_and_something_else():
    for m in pkgutil.iter_modules(mixjax.__path__):
        if m.name.startswith("_"):
            continue
        module = importlib.import_module(f"mixjax.{m.name}")
        assert getattr(mixjax, m.name) is module, f"mixjax.{m.name} is not the module mixjax/{m.name}.py"


def test_import_changes_no_global_jax_setting():
    code = "import jax, mixjax; assert not jax.config.jax_enable_x64; print(jax.config.jax_enable_x64)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
