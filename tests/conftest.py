import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import mixjax  # noqa: E402,F401  (enables float64 before any test builds arrays)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def slimpajama():
    return mixjax.load_dataset("slimpajama7")


@pytest.fixture(scope="session")
def slim122(slimpajama):
    """The 60-mixture SlimPajama subset at 122M parameters / 9.998e9 tokens."""
    return slimpajama.at_scale(122e6, 9.998e9)
