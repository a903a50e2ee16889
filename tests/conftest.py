import atexit
import ctypes
import ctypes.util
import gc
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests check numbers, not speed: compile with XLA's cheap CPU backend settings (about half the compile time).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the tests compare float64 fits with float64 references
# Strict broadcasting: an array of rank 1 combined with one of rank 2 (say) is an error, not a silent broadcast; the
# library reshapes explicitly (x[:, None], jnp.broadcast_to), so a shape mistake cannot pass as a different shape.
jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtypes: no implicit promotion between float32 and float64, integers and floats, or booleans and numbers
# (Python scalars stay weak); the library casts explicitly, so a float32 fit cannot silently compute in float64.
jax.config.update("jax_numpy_dtype_promotion", "strict")
# Each module frees its compiled programs (below), and many modules compile the same ones (the same law, data shape
# and solver): a persistent compilation cache for this run only lets a later module load a program instead of
# compiling it again. Programs that hold a host callback (a progress bar) are not cached, by JAX's rule.
_CACHE_DIR = tempfile.mkdtemp(prefix="mixjax-test-xla-cache-")
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
# Commands run as subprocesses (the console script, the distributed runs) share the same cache.
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import mixjax  # noqa: E402
import pytest  # noqa: E402


try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _LIBC.malloc_trim  # glibc only
except (OSError, AttributeError):
    _LIBC = None


@pytest.fixture(scope="session")
def slimpajama():
    return mixjax.load_dataset("slimpajama7")


@pytest.fixture(scope="session")
def slim122(slimpajama):
    """The 60-mixture SlimPajama subset at 122M parameters / 9.998e9 tokens."""
    return slimpajama.at_scale(122e6, 9.998e9)


@pytest.fixture(scope="session")
def synthetic():
    """Noise-free losses of a known log-linear law: 24 mixtures of 3 domains, each at two model sizes (48 rows)."""
    import numpy as np

    rng = np.random.default_rng(7)
    h = rng.dirichlet(np.ones(3), 24)
    c = np.log([2.5, 3.0, 2.2])
    t = rng.normal(0.0, 0.4, (3, 3))
    H = np.concatenate([h, h])
    losses = np.exp(c + H @ t.T)
    return mixjax.from_arrays(H, losses, np.repeat([1e8, 4e8], 24), np.full(48, 1e10), domains=["a", "b", "c"],
                              mixture_id=np.tile(np.arange(24), 2), name="synthetic")


@pytest.fixture(scope="module", autouse=True)
def _drop_compiled_programs():
    """Each test module compiles its own programs: free them afterwards to bound the suite's peak memory."""
    yield
    jax.clear_caches()
    gc.collect()
    if _LIBC is not None:  # hand the freed heap back to the OS, so the peak is one module's, not the sum's
        _LIBC.malloc_trim(0)
