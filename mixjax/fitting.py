"""Fitting laws: settings, the batched ``solve`` over a :class:`mixjax.problem.Problem`, multi-start and the
``fit`` entry point.

:func:`solve` fits a batch of B laws at once (random starts, bootstrap resamples as per-row weights, folds) in
one compiled call of the engine (:func:`mixjax._engine.minimize`): every member pays the same fixed work per step,
finished members are frozen, and each member gets its own status (:class:`mixjax.Status`). Laws that declare
linear coefficients are fitted by variable projection (those coefficients are solved in closed form inside the
objective, see :mod:`mixjax.problem`).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import _engine, distributed
from .data import DataError, MixtureData, data_fingerprint
from .laws import AbstractLaw, DataSummary, n_params
from .laws._base import predict_rows
from .metrics import metric_table
from .objectives import MSE, AbstractObjective, HuberLog, Relative, objective_from
from .problem import OBJECTIVES, FitArrays, Problem, law_class, prepare, summarize
from .results import FitFailedError, FitRecord, Solution, Status, status_counts
from .units import ScaleExtrapolationWarning, extrapolation, extrapolation_message

__all__ = ["OutOfRangeWarning", "MaxStepsWarning", "check_seed", "FitConfig", "default_max_steps", "FitArrays", "FitResult", "Fit", "fit", "fit_chinchilla", "solve", "prepare", "objective_value", "init_starts", "start_keys", "best_of"]

OPTIMIZERS = ("lbfgs", "lm", "adam")
_law_class = law_class


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of a fit; hashable, so it is static under ``jax.jit`` (a new value compiles a new program).

    objective: "mse", "relative" or "huber_log" (huber_delta for the latter), or an objective object
      (:mod:`mixjax.objectives`: ``MSE()``, ``Relative()``, ``HuberLog(delta)``, or a user's subclass of
      ``AbstractObjective``). A bundled objective given as an object is stored by name (``HuberLog(delta)`` as
      "huber_log" with huber_delta = delta), so the config stays what a fit file records.
    optimizer: "lbfgs" (the default: L-BFGS, one trial point per step), "lm" (Levenberg-Marquardt; fewer, dearer
      steps: one Jacobian each) or "adam" (a first-order baseline), or a solver object (:mod:`mixjax.solvers`:
      ``LBFGS(memory=10)``, ``LevenbergMarquardt()``, ``Adam(learning_rate)``, or a user's ``AbstractSolver``); a
      bundled solver with only the settings named here is stored by name. ``benchmarks/fit_speed.py`` compares them.
    varpro: solve linear coefficients in closed form (variable projection) where the law declares them and the
      objective is least squares (``mse``/``relative``).
    max_steps: solver steps per member; None (the default) picks :func:`default_max_steps` of the law's parameter
      count (2000; 8000 above 50 parameters, 20000 above 200, 40000 above 1000). A member converges when its relative gradient ``max_k |dJ/dy_k| / J``
      (parameters are logs and logits) falls below gtol; or J fell by less than ftol (relative) over the last
      ``window`` steps and either the relative gradient is below 100 gtol, or no step lowers J any more, or the
      parameters stopped moving (a minimum at a kink); or J fell by less than 1e-5 over the last 5 ``window``
      steps (see :mod:`mixjax._engine`). Defaults depend on dtype (float64: gtol 1e-6, ftol 1e-8; float32:
      gtol 1e-4, ftol 1e-6).
    dtype: "float64" or "float32" (the accelerator fast path; every operation of the compiled program is float32).
    lanes: None (the default) steps every member of a batch at once until the slowest has finished; an integer L
      runs the batch through L lanes, a lane taking the next pending member as soon as its member finishes (lane
      refill, :mod:`mixjax._engine`): the same result per member (up to rounding, as for another batch size),
      about ``sum(steps) / L`` lane-steps instead of ``B max(steps)``, and solver state for L members only. A
      batch of at most L members runs as with None; sharded batches ignore it. ``benchmarks/lane_refill.py``
      measures it (on a CPU it pays for batches several times larger than L).
    """

    objective: str | AbstractObjective = "mse"
    optimizer: str | _engine.AbstractSolver = "lbfgs"
    max_steps: int | None = None
    ftol: float | None = None
    gtol: float | None = None
    window: int = 10
    learning_rate: float = 0.02
    lbfgs_memory: int = 20
    huber_delta: float = 1e-3
    varpro: bool = True
    dtype: str = "float64"
    lanes: int | None = None

    def __post_init__(self):
        _engine.check_lanes(self.lanes)
        self._store_by_name()
        if not isinstance(self.objective, AbstractObjective) and self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES} or an AbstractObjective, got {self.objective!r}")
        if not isinstance(self.optimizer, _engine.AbstractSolver) and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} or an AbstractSolver, got {self.optimizer!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError(
                "dtype='float64' needs 64-bit floats in JAX: call jax.config.update('jax_enable_x64', True) at the "
                "start of the program (or set JAX_ENABLE_X64=1), or pass dtype='float32'"
            )

    def _store_by_name(self) -> None:
        """Bundled objective and solver objects as their names and this config's settings (see the class docstring)."""
        obj, opt = self.objective, self.optimizer
        if isinstance(obj, type) and issubclass(obj, AbstractObjective):
            obj = obj()
        if isinstance(obj, AbstractObjective) and type(obj) in (MSE, Relative, HuberLog):
            if isinstance(obj, HuberLog):
                object.__setattr__(self, "huber_delta", float(obj.delta))
            obj = obj.name
        object.__setattr__(self, "objective", obj)
        named = {_engine.LBFGS: ("lbfgs", {"memory": "lbfgs_memory"}), _engine.LevenbergMarquardt: ("lm", {}),
                 _engine.Adam: ("adam", {"learning_rate": "learning_rate"})}
        if type(opt) in named:
            name, settings = named[type(opt)]
            if opt == type(opt)(**{k: getattr(opt, k) for k in settings}):
                for k, field in settings.items():
                    object.__setattr__(self, field, getattr(opt, k))
                object.__setattr__(self, "optimizer", name)

    @property
    def objective_object(self) -> AbstractObjective:
        """The objective as an object (:mod:`mixjax.objectives`)."""
        return objective_from(self.objective, self.huber_delta)

    def resolved(self, n_parameters: int) -> FitConfig:
        """This config with ``max_steps`` filled in (when None) for a law of ``n_parameters`` parameters."""
        return self if self.max_steps is not None else dataclasses.replace(self, max_steps=default_max_steps(n_parameters))

    @property
    def tolerances(self) -> tuple[float, float]:
        """(ftol, gtol) with the dtype defaults filled in."""
        f64 = self.dtype == "float64"
        ftol = self.ftol if self.ftol is not None else (1e-8 if f64 else 1e-6)
        gtol = self.gtol if self.gtol is not None else (1e-6 if f64 else 1e-4)
        return float(ftol), float(gtol)

    def solver(self) -> _engine.AbstractSolver:
        """The solver object named by ``optimizer`` (or ``optimizer`` itself when it is one)."""
        name = self.optimizer
        if isinstance(name, _engine.AbstractSolver):
            return name
        if name == "lm":
            return _engine.LevenbergMarquardt()
        if name == "lbfgs":
            return _engine.LBFGS(memory=self.lbfgs_memory)
        return _engine.Adam(learning_rate=self.learning_rate)


#: Default solver steps per start by the law's number of parameters (:func:`default_max_steps`): DEFAULT_STEPS up to
#: MID_PARAMS parameters, MID_PARAMS_STEPS up to MANY_PARAMS, MANY_PARAMS_STEPS above (twice that above 1000). The
#: limits are high enough that a fit ends by a convergence test, not at the limit, on the bundled comparisons: on
#: Pile-17 every start of the five laws with 595-663 parameters needs 5000-16000 steps
#: (``benchmarks/pile17_steps.py``), and every start of the 50-200-parameter laws that did not finish within 2000
#: steps (capacity_noise on Pile-17, 86 parameters; shukor_joint on Pile-4, 76) finishes within 6100
#: (``benchmarks/pile17_steps.py --splits``). Fits that converge stop earlier, so only fits that never settle pay the limit.
MID_PARAMS = 50
MANY_PARAMS = 200
DEFAULT_STEPS = 2000
MID_PARAMS_STEPS = 8000
MANY_PARAMS_STEPS = 20000


#: Stationarity tests of law fits beside gtol / ftol (:mod:`mixjax._engine`): a member whose parameters (logs and
#: logits) moved by less than FIT_XTOL over a flat window sits at a kink; one whose objective fell by less than
#: FIT_SLOW_FTOL (relative) over 5 windows has converged in the objective.
FIT_XTOL = 1e-3
FIT_SLOW_FTOL = 1e-5


def default_max_steps(n_parameters: int) -> int:
    """Solver steps per member when none are given: 2000; 8000 for a law with more than 50 parameters, 20000 above
    200, and 40000 above 1000 (the capacity laws beyond 200 domains, the laws with K^2 parameters beyond 30 domains).
    Fits that converge stop earlier: the limit only bounds the ones that do not (and, in a batch, every member waits
    for the slowest one, so a batch with a member that never settles costs the whole limit)."""
    if n_parameters > 1000:
        return 2 * MANY_PARAMS_STEPS
    if n_parameters > MANY_PARAMS:
        return MANY_PARAMS_STEPS
    return MID_PARAMS_STEPS if n_parameters > MID_PARAMS else DEFAULT_STEPS


def default_dtype() -> str:
    """"float64" when JAX has 64-bit floats enabled, else "float32"."""
    return "float64" if jax.config.jax_enable_x64 else "float32"


def objective_value(law: AbstractLaw, arrays: FitArrays, weights: jax.Array, config: FitConfig) -> jax.Array:
    """The weighted, masked objective J of a complete law (a scalar; see :mod:`mixjax.problem`)."""
    problem = Problem.build(law, arrays, config.objective_object, varpro=False)
    return problem.value(law, weights)


#: The batched solution of a fit: :class:`mixjax.Solution` with the fitted laws as ``y`` (the name it had before the
#: engine, fits, bootstraps and mixture searches shared one type; kept so that existing code reads on).
FitResult = Solution


def optimised_spec(law: AbstractLaw, varpro: bool):
    """Bool pytree: True for the leaves the solver moves (inexact arrays, less the linear fields under varpro)."""
    spec = jax.tree_util.tree_map(eqx.is_inexact_array, law)
    fields = type(law).linear_fields if varpro else ()
    if fields:
        spec = eqx.tree_at(lambda l: [getattr(l, f) for f in fields], spec, replace=[False] * len(fields))
    return spec


def flat_residuals(y, row_w, shared):
    """Engine objective: residuals of the law whose optimised leaves are ``y`` (flat), under row weights."""
    problem, template, spec = shared
    opt, rest = eqx.partition(template, spec)
    _, unravel = ravel_pytree(opt)
    law = eqx.combine(unravel(y), rest)
    return problem.residuals(law, row_w)


@eqx.filter_jit
def _fit_program(laws, weights, problem: Problem, solver, max_steps, ftol, gtol, window: int, lanes: int | None = None,
                 report_id=None) -> Solution:
    """One compiled program per fit: flatten the optimised leaves, run the engine, rebuild the laws, solve their
    linear coefficients and score them."""
    if solver.uses_jacobian and problem.envelope_gradient:
        problem = dataclasses.replace(problem, envelope_gradient=False)
    spec = optimised_spec(laws, problem.varpro)
    opt, rest = eqx.partition(laws, spec)
    y0 = jax.vmap(lambda t: ravel_pytree(t)[0])(opt)
    template = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, laws)
    shared = (problem, template, optimised_spec(template, problem.varpro))
    sol = _engine.minimize(solver, flat_residuals, y0, weights, shared, max_steps=max_steps, ftol=ftol, gtol=gtol, window=window,
                           xtol=FIT_XTOL, slow_ftol=FIT_SLOW_FTOL, lanes=lanes, report_id=report_id)
    unravel = ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], opt))[1]
    fitted = eqx.combine(jax.vmap(unravel)(sol.y), rest)
    full = jax.vmap(problem.complete)(fitted, weights)
    value = jax.vmap(problem.value)(full, weights)
    status = jnp.where(jnp.isfinite(value), sol.status, int(Status.nonfinite))
    # a converged member outside the law's sane range is out_of_range; a member stopped at the step limit stays
    # max_steps (unfinished, wherever it was), so that the status says first whether the fit is finished
    status = jnp.where((status == int(Status.converged)) & ~jax.vmap(lambda law: law.in_sane_range())(full), int(Status.out_of_range), status)
    return Solution(full, value, status, sol.num_steps, sol.rel_grad)


def _solve_batch(laws: AbstractLaw, weights: jax.Array, problem: Problem, config: FitConfig, report_id: int = 0) -> Solution:
    ftol, gtol = config.tolerances
    dt = weights.dtype
    return _fit_program(laws, weights, problem, config.solver(), jnp.asarray(config.max_steps, jnp.int32),
                        jnp.asarray(ftol, dt), jnp.asarray(gtol, dt), config.window, config.lanes, _engine._report_arg(report_id))


def _batch_sharding(n_devices: int):
    """Shardings that split a leading batch axis over the first ``n_devices`` local devices (this process's), and
    replicate the rest."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.local_devices()[:n_devices]), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())


def solve(
    laws: AbstractLaw,
    weights: jax.Array,
    arrays: FitArrays | Problem,
    config: FitConfig,
    *,
    chunk_size: int | None = None,
    shard: bool | None = None,
    progress=None,
) -> Solution:
    """Fit a batch of laws (leading axis B of every parameter array) with per-member row weights ``(B, n)``.

    One compiled program per (law type, shapes, config): new data values of the same shapes reuse it.

    arrays: the prepared :class:`FitArrays` (a :class:`Problem` is built from them and ``config``), or a Problem.
    chunk_size: default: the whole batch, unless the compiled program's memory (XLA's estimate, read before it
      runs) exceeds half the free memory of the device (host RAM on a CPU): the batch is then cut into chunks
      that fit, with a warning. Otherwise: cut the batch into chunks of exactly this many members (the last one, or a smaller batch, padded by
      repeating its last member), run one after another through the same compiled program: batches larger than
      device memory run without recompiling, and batches of any size reuse one program. If a chunk
      (or the whole batch, by default) runs out of device memory, the chunk size is halved and the call retried,
      so too-large batches split automatically (each new chunk size compiles once).
    shard: split the batch axis over this process's devices with ``jax.sharding`` (default: when it has more
      than one). Each member is computed on one device; results equal the one-device run up to rounding.
    Several processes (after ``jax.distributed.initialize``, see :mod:`mixjax.distributed`): every process passes
      the same batch; each fits one contiguous share of the members (on its own devices, chunked as above), then
      the shares are gathered, so every process returns the whole result. Every process must make the call.
    progress: optional callable ``progress(done, total)``: called as the solver advances (every 10 steps, members
      counted in proportion to the steps taken; with ``config.lanes``, members finished) and after each chunk
      (members fitted so far; of this process's share when there are several processes).
    """
    config = config.resolved(n_params(jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, laws)))
    problem = arrays if isinstance(arrays, Problem) else Problem.build(laws, arrays, config.objective_object, varpro=config.varpro)
    if distributed.process_count() > 1:
        return _solve_share(laws, weights, problem, config, chunk_size=chunk_size, shard=shard, progress=progress)
    return _solve_local(laws, weights, problem, config, chunk_size=chunk_size, shard=shard, progress=progress)


def _solve_share(laws, weights, problem, config, **kw) -> Solution:
    """:func:`solve` over several processes: this process fits its share of the members (padded by repeating the
    last member, so that every share has one size), then every share is gathered."""
    B = weights.shape[0]
    lo, hi, size = distributed.share(B)
    take = np.minimum(np.arange(lo, lo + size), B - 1)
    mine = jax.tree_util.tree_map(lambda x: x[take] if eqx.is_array(x) else x, laws)
    res = _solve_local(mine, weights[take], problem, config, **kw)
    arrays_part, static = eqx.partition(res, eqx.is_array)
    whole = distributed.gather(arrays_part, B)
    return eqx.combine(jax.tree_util.tree_map(jnp.asarray, whole), static)


def _solve_local(laws, weights, problem, config, *, chunk_size, shard, progress) -> Solution:
    """:func:`solve` on this process's devices."""
    B = weights.shape[0]
    n_local = jax.local_device_count()
    n_dev = n_local if (shard or (shard is None and n_local > 1)) else 1
    if chunk_size is None:
        chunk = B if n_dev > 1 else _chunk_for_memory(laws, weights, problem, config)
    else:
        chunk = max(1, int(chunk_size))
    while True:
        try:
            return _solve_chunked(laws, weights, problem, config, chunk, n_dev, progress)
        except Exception as e:  # XlaRuntimeError has no stable import path across jax versions
            if "RESOURCE_EXHAUSTED" not in str(e) or chunk <= n_dev:
                raise
            warnings.warn(f"batch of {chunk} fits ran out of device memory; retrying in chunks of {max(chunk // 2, n_dev)}", stacklevel=2)
            chunk = max(chunk // 2, n_dev)


def _memory_budget() -> int | None:
    """Bytes one batch may use: half the free memory of the default device (of the host's RAM on a CPU)."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = {}
    if "bytes_limit" in stats:
        return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(0.5 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return None


def _gib(n_bytes: float) -> str:
    """A memory size for messages: GiB, or MiB below a tenth of a GiB."""
    return f"{n_bytes / 2**30:.3g} GiB" if n_bytes >= 2**30 / 10 else f"{n_bytes / 2**20:.3g} MiB"


def check_batch_memory(members: int, n_parameters: int, arrays: FitArrays, config: FitConfig, *, what: str, fewer: str,
                  chunk_size: int | None = None, extra_bytes: int = 0) -> None:
    """Refuse a batch, before anything of it is allocated, when what it holds at once cannot fit the memory budget
    (:func:`_memory_budget`): every member's start, row weights ``(B, n)`` and result, and the solver state of
    the members that run together (all of them when the batch is sharded over devices; one chunk otherwise, since
    :func:`solve` cuts a larger batch into chunks that fit). ``extra_bytes``: other arrays the caller holds."""
    budget = _memory_budget()
    if budget is None:
        return
    B, P = int(members), int(n_parameters)
    n, V = int(arrays.y.shape[0]), int(arrays.y.shape[1])
    M = n * V
    if chunk_size is not None:
        together = min(B, int(chunk_size))
    else:
        n_dev = jax.local_device_count()
        together = math.ceil(B / n_dev) if n_dev > 1 else 1
    state = 2 * P + 6 * config.window + 2 * M  # the member's position and stopping history, residuals and their gradient
    engine_solver = config.solver()
    if isinstance(engine_solver, _engine.LBFGS):
        m = engine_solver.memory
        state += (2 * m + 1) * P  # curvature pairs (2 m P) and the gradient
        solver = f"L-BFGS memory (2 x {m} x {P} per member)"
    elif engine_solver.uses_jacobian:
        state += M * P + P * P + M  # residual Jacobian and normal matrix
        solver = f"Levenberg-Marquardt Jacobian ({M} x {P} per member)"
    else:
        state += 3 * P
        solver = "Adam moments"
    item = jnp.dtype(config.dtype).itemsize
    parts = (B * P * item, B * n * item, 2 * B * (P + 4) * item, together * state * item)
    need = sum(parts) + int(extra_bytes)
    if need <= budget:
        return
    where = "the host's free memory" if jax.default_backend() == "cpu" else f"the free memory of {jax.devices()[0].device_kind}"
    raise ValueError(
        f"{B} {what} need about {_gib(need)} of memory before the first step, more than the {_gib(budget)} available "
        f"(half of {where}): starts {_gib(parts[0])}, row weights ({B}, {n}) {_gib(parts[1])}, results {_gib(parts[2])}, "
        f"{solver} {_gib(parts[3])}" + (f", other arrays {_gib(extra_bytes)}" if extra_bytes else "") + f"; use {fewer}"
    )


def _chunk_for_memory(laws, weights, problem, config) -> int:
    """The whole batch, or the largest power-of-two chunk whose program fits the memory budget beside what stays in
    memory across chunks (the batch's inputs and every chunk's results). The program of the whole batch is compiled
    to read its memory need; a later call of the same shapes reuses that compilation."""
    B = weights.shape[0]
    budget = _memory_budget()
    if budget is None or B <= 1:
        return B
    ftol, gtol = config.tolerances
    dt = weights.dtype
    try:
        compiled = _fit_program.lower(laws, weights, problem, config.solver(), jnp.asarray(config.max_steps, jnp.int32),
                                      jnp.asarray(ftol, dt), jnp.asarray(gtol, dt), config.window, config.lanes,
                                      None).compile()
        mem = compiled.compiled.memory_analysis()
        need = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - no estimate on this backend: run the batch whole (out-of-memory still retries smaller)
        return B
    if need <= budget:
        return B
    inputs = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves((laws, weights)) if eqx.is_array(x))
    outputs = 2 * sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(laws) if eqx.is_inexact_array(x))
    room = max(budget - inputs - outputs, 0)
    chunk = 1 << max(0, math.floor(math.log2(max(1.0, B * room / need))))
    warnings.warn(f"a batch of {B} fits needs about {_gib(need)}, more than the {_gib(budget)} budget (half the free "
                  f"memory) beside its inputs and results ({_gib(inputs + outputs)}): running it in chunks of {chunk}", stacklevel=3)
    return min(chunk, B)


def _solve_chunked(laws, weights, problem, config, chunk, n_dev, progress):
    """Run the batch in chunks of ``chunk`` members (a multiple of ``n_dev``), one after another through one compiled
    program; only the last chunk is padded (by repeating its last member), so no copy of the whole batch is made."""
    B = weights.shape[0]
    chunk = math.ceil(chunk / n_dev) * n_dev
    n_chunks = math.ceil(B / chunk)
    if n_dev > 1 and config.lanes is not None:
        config = dataclasses.replace(config, lanes=None)  # lanes would gather members across devices
    refill = config.lanes is not None and config.lanes < chunk
    if n_dev > 1:
        batch_sh, replicated = _batch_sharding(n_dev)
        problem = jax.device_put(problem, replicated)

    def piece(x, lo, hi):
        if not eqx.is_array(x):
            return x
        if lo == 0 and hi == B == chunk:
            return x
        x = x[lo:hi]
        return jnp.concatenate([x, jnp.repeat(x[-1:], chunk - (hi - lo), axis=0)]) if hi - lo < chunk else x

    outs = []
    for i in range(n_chunks):
        lo, hi = i * chunk, min((i + 1) * chunk, B)
        laws_c = jax.tree_util.tree_map(lambda x, lo=lo, hi=hi: piece(x, lo, hi), laws)
        weights_c = piece(weights, lo, hi)
        if n_dev > 1:
            laws_c = eqx.combine(jax.device_put(eqx.filter(laws_c, eqx.is_array), batch_sh), eqx.filter(laws_c, eqx.is_array, inverse=True))
            weights_c = jax.device_put(weights_c, batch_sh)
        def within_chunk(steps, n_active, n_done, i=i):  # members count as done in proportion to the steps (finished ones with lanes)
            if progress is not None and n_active:
                part = n_done if refill else int(chunk * min(steps, config.max_steps) / config.max_steps)
                progress(min(i * chunk + part, B), B)

        with _engine.reporting(within_chunk if progress is not None else None) as rep:
            outs.append(_solve_batch(laws_c, weights_c, problem, config, rep.id))
            if progress is not None:
                jax.block_until_ready(outs[-1].loss)
        if progress is not None:
            progress(min((i + 1) * chunk, B), B)
    jax.block_until_ready(outs)  # surface out-of-memory errors here, where the caller can retry smaller
    if n_chunks == 1 and chunk == B:
        return outs[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs)[:B] if eqx.is_array(xs[0]) else xs[0], *outs)


def law_for_data(law, data: MixtureData, dtype: str | None = None) -> tuple[type[AbstractLaw], Any]:
    """``(cls, law)``: the class of ``law`` (a name, class or instance) for the table ``data``, through the law
    interface's hook :meth:`AbstractLaw.for_data`, and what to fit: the bound class for a name or a class, the
    instance itself for an instance.

    An instance of a class that needs no binding, or that is already bound (and agrees with ``data``), is used as
    is. An instance of a class that the hook binds to ``data`` (the registered ``exposure`` class on any table) is
    rebuilt as an instance of the bound class with the same parameters when they have the bound law's shapes (a
    table of one phase without unique tokens, where binding changes nothing), and refused with a ValueError
    otherwise: its parameters are laid out for every column as one domain of one phase, not for the table."""
    cls = law_class(law)
    if not isinstance(data, MixtureData):  # prepare() refuses it with its own message
        return cls, law
    bound = cls.for_data(data)
    if bound is cls:
        return cls, law
    if not (isinstance(bound, type) and issubclass(bound, cls)):
        raise TypeError(f"{cls.__name__}.for_data must return {cls.__name__} or a subclass of it, got {bound!r}")
    if not isinstance(law, AbstractLaw):
        return bound, bound
    return bound, _bind_instance(law, bound, data, dtype)


def _bind_instance(law: AbstractLaw, bound: type, data: MixtureData, dtype: str | None, batched: bool = False) -> AbstractLaw:
    """``law`` (an instance of a class that ``bound`` binds, batched along a leading axis with ``batched``) as an
    instance of ``bound`` with the same parameters; a ValueError when they do not have ``bound``'s shapes."""
    cls = type(law)
    describe = getattr(bound, "describe_binding", None)
    layout = f" ({describe()})" if describe is not None else ""

    def refuse(why: str) -> ValueError:
        return ValueError(
            f"law {cls.name}: the given {'batch of starts' if batched else 'law'} is an instance of {cls.__name__} not bound "
            f"to a table, but on {data.name!r} the law is bound to the table's layout{layout}: {why}. Pass the law by name "
            f"({cls.name!r}) or class, or build it from {cls.__name__}.for_data(data)"
        )

    fields = {f.name: getattr(law, f.name) for f in dataclasses.fields(law) if f.init}
    if bound.has_init():
        arrays, _ = prepare(bound, data, dtype=dtype or default_dtype())
        like = eqx.filter_eval_shape(bound.init, jax.random.PRNGKey(0), summarize(arrays, data))
        wrong = []
        for name, value in fields.items():
            want = getattr(like, name, None)
            if isinstance(want, jax.ShapeDtypeStruct) and tuple(np.shape(value))[int(batched):] != tuple(want.shape):
                wrong.append(f"{name} {tuple(np.shape(value))[int(batched):]} (bound: {tuple(want.shape)})")
        if wrong:
            raise refuse("its parameters have other shapes, " + ", ".join(wrong))
    try:
        return bound(**fields)
    except (TypeError, ValueError) as e:
        raise refuse(f"it cannot be rebuilt from its fields ({e})") from None


#: Seeds are integers in [0, SEED_LIMIT): ``jax.random.PRNGKey`` gives distinct keys to all of them with or without
#: 64-bit mode (a 32-bit key wraps larger seeds around, and seeds of 2**63 and more overflow).
SEED_LIMIT = 2**32


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int, or a ValueError naming ``name`` (a keyword or a command-line flag) unless it is an integer
    in ``[0, 2**32)``."""
    try:
        value = int(seed)
        ok = not isinstance(seed, bool) and value == seed and 0 <= value < SEED_LIMIT
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer from 0 to {SEED_LIMIT - 1} (2**32 - 1), got {seed!r}")
    return value


def start_keys(key: jax.Array, first: int, n: int) -> jax.Array:
    """The keys of work items ``first .. first+n-1``: item i draws from ``jax.random.fold_in(key, i)``, so its
    numbers depend on the seed and its own index only (not on the batch size, chunks, devices or processes)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(first, first + n, dtype=jnp.uint32))


def init_starts(law, key: jax.Array, n: int, summary: DataSummary, dtype: str = "float64", *, first: int = 0) -> AbstractLaw:
    """A batch of ``n`` starting points, those of work items ``first .. first+n-1``: item i is ``law.init`` drawn
    with ``jax.random.fold_in(key, i)`` (:func:`start_keys`), so any part of a larger batch draws the same starts
    as the whole. For a law instance, the instance itself is item 0 and the others are random draws. A law that
    defines no ``init`` must be given as an instance: the other starts perturb each parameter x to
    ``x + 0.3 (|x| + 0.1) z``, z standard normal."""
    cls = _law_class(law)
    first = int(first)
    keys = start_keys(key, first, n)
    given_first = isinstance(law, AbstractLaw) and first == 0
    if not cls.has_init():
        if not isinstance(law, AbstractLaw):
            cls.init(key, summary)  # raises the law's message: an instance is needed
        params, rest = eqx.partition(law, eqx.is_inexact_array)
        leaves, treedef = jax.tree_util.tree_flatten(params)

        def moved(k):
            sub = jax.random.split(k, len(leaves))
            return [x + 0.3 * (jnp.abs(x) + 0.1) * jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(sub, leaves)]

        drawn = jax.vmap(moved)(keys)
        if given_first:
            drawn = [d.at[0].set(x) for d, x in zip(drawn, leaves)]
        starts = eqx.combine(jax.tree_util.tree_unflatten(treedef, drawn), rest)
    else:
        starts = jax.vmap(lambda k: cls.init(k, summary))(keys)
        if isinstance(law, AbstractLaw):
            drawn = eqx.filter(starts, eqx.is_inexact_array)
            given = eqx.filter(law, eqx.is_inexact_array)
            for (path, s), a in zip(jax.tree_util.tree_flatten_with_path(drawn)[0], jax.tree_util.tree_leaves(given)):
                if tuple(s.shape[1:]) != tuple(jnp.shape(a)):
                    raise ValueError(
                        f"law {cls.name}: parameter {jax.tree_util.keystr(path).lstrip('.')} of the given law has shape "
                        f"{tuple(jnp.shape(a))}, but the data ({summary.n_domains} domains, {summary.n_targets} targets) "
                        f"needs {tuple(s.shape[1:])}"
                    )
            if given_first:
                first_law = jax.tree_util.tree_map(lambda a: a[None], given)
                starts = eqx.combine(
                    jax.tree_util.tree_map(lambda s, a: s.at[0].set(a[0].astype(s.dtype)), drawn, first_law),
                    eqx.filter(law, eqx.is_inexact_array, inverse=True),
                )
            else:
                starts = eqx.combine(drawn, eqx.filter(law, eqx.is_inexact_array, inverse=True))
    dt = jnp.dtype(dtype)
    return jax.tree_util.tree_map(lambda x: x.astype(dt) if eqx.is_inexact_array(x) else x, starts)


def check_first_start(law, summary: DataSummary, dtype: str, arrays: FitArrays, data: MixtureData, init=None) -> int:
    """Check, by tracing only (nothing is allocated or compiled), that one start of ``law`` (or the first of the batch
    ``init``) predicts one loss per target for one row of the data; returns its number of free parameters.

    A law that fails on the data's shapes (parameters sized for another number of domains) or returns another
    shape than ``(V,)`` is a ValueError naming the law, the data's domains and targets and the shapes involved."""
    cls = _law_class(law)
    K, V = int(arrays.h.shape[1]), int(arrays.y.shape[1])
    targets = list(data.domains) if cls.per_domain else list(data.targets)
    h1, N1, D1 = arrays.h[:1], arrays.N[:1], arrays.D[:1]

    def one_row(law, batch):
        starts = batch if batch is not None else init_starts(law, jax.random.PRNGKey(0), 1, summary, dtype)
        one = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, starts)
        try:
            out = one.evaluate_rows(h1, N1, D1)
        except Exception as e:  # noqa: BLE001 - a user's law may raise anything on shapes it was not written for
            shapes = ", ".join(f"{jax.tree_util.keystr(p).lstrip('.')} {tuple(x.shape)}"
                               for p, x in jax.tree_util.tree_flatten_with_path(eqx.filter(one, eqx.is_array))[0])
            first = (str(e).strip().splitlines() or [""])[0]
            raise ValueError(
                f"law {cls.name} cannot predict one row of {data.name!r}, which has K={K} domains "
                f"({', '.join(data.domains)}) and {V} targets; its parameters have shapes {shapes}: {type(e).__name__}: {first}"
            ) from None
        return one, out

    one, out = eqx.filter_eval_shape(one_row, law, init)
    got = tuple(out.shape[1:]) if isinstance(out, jax.ShapeDtypeStruct) and out.ndim >= 1 else None
    if got != (V,) or out.shape[0] != 1:
        shown = f"shape {got}" if got is not None else f"{type(out).__name__}, not an array"
        raise ValueError(
            f"law {cls.name} predicts {shown} for one row of {data.name!r}; expected shape ({V},): one loss per target "
            f"({', '.join(targets)})"
        )
    leaves = jax.tree_util.tree_leaves(one)
    return int(sum(math.prod(x.shape) for x in leaves if isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact)))


@eqx.filter_jit
def best_of(result: Solution, axis: int = -1) -> tuple[Solution, jax.Array]:
    """For each group along ``axis`` (the starts), the best member that did not fail, and its index.
    Groups whose members all failed return member 0 with status ``nonfinite``."""
    loss = jnp.where(result.status != int(Status.nonfinite), result.loss, jnp.inf)
    loss = jnp.where(jnp.isfinite(loss), loss, jnp.inf)
    idx = jnp.argmin(loss, axis=axis)

    def pick(x):
        x = jnp.moveaxis(x, axis if axis >= 0 else loss.ndim + axis, loss.ndim - 1) if x.ndim >= loss.ndim else x
        ix = idx.reshape(idx.shape + (1,) + (1,) * (x.ndim - loss.ndim))
        return jnp.take_along_axis(x, ix, axis=loss.ndim - 1).squeeze(loss.ndim - 1)

    return jax.tree_util.tree_map(lambda x: pick(x) if eqx.is_array(x) else x, result), idx


# --------------------------------------------------------------------------- user-facing fit
class OutOfRangeWarning(UserWarning):
    """The best fit has a parameter outside its law's documented sane range (``AbstractLaw.sane_ranges``)."""


class MaxStepsWarning(UserWarning):
    """The best fit stopped at the step limit (status ``max_steps``) before a convergence test passed."""


@dataclasses.dataclass
class Fit:
    """A fitted law with everything needed to judge and reproduce it.

    Attributes: ``law`` (the best start), ``loss`` (its objective), ``status``, ``num_steps``, ``starts`` (the
    :class:`mixjax.Solution` of every start: laws, objectives, statuses, steps), ``config`` (:class:`FitConfig`),
    ``record`` (a :class:`FitRecord`: data selection, mask rule, initialization scheme, seed, timings: what
    fitting-pitfall surveys ask a fit to record).
    ``info`` is the record as a plain dict (for JSON)."""

    law: AbstractLaw
    loss: float
    status: Status
    num_steps: int
    starts: Solution
    config: FitConfig
    record: FitRecord

    @property
    def info(self) -> dict[str, Any]:
        """The :attr:`record` as a plain dict (a copy: change the record with ``record.replace``)."""
        return self.record.as_dict()

    @property
    def n_params(self) -> int:
        return n_params(self.law)

    def params(self) -> dict[str, np.ndarray]:
        """Readable parameter values by name (numpy arrays)."""
        return {k: np.asarray(v) for k, v in self.law.params().items()}

    def _aligned(self, data: MixtureData, with_targets: bool) -> MixtureData:
        """``data`` matched to the fit by name: its domains reordered to the fit's (different names are an error)
        and, with ``with_targets``, its loss columns to the fit's targets; warns when a row lies far outside the
        fitted model sizes or token counts (:func:`Fit.scale_extrapolation`)."""
        if not isinstance(data, MixtureData):
            raise TypeError(f"data must be a MixtureData (see mixjax.load_csv / from_arrays), got {type(data).__name__}")
        per_domain = law_class(self.law).per_domain
        targets = self.record.targets if with_targets and not per_domain else None
        out = data.align(self.record.domains, targets, to=f"the fit of {self.record.law}")
        binding = getattr(law_class(self.law), "binding", None)
        if binding is not None and binding() is not None:
            law_class(self.law).for_data(out)  # a law bound to its table's layout: a ValueError if this table's differs
        if with_targets and per_domain:
            unscored = [d for d in self.record.domains if d not in out.targets]
            if unscored and len(unscored) < len(self.record.domains):
                warnings.warn(f"{data.name}: no loss column for domain(s) {unscored}; their losses are not scored "
                              f"(loss columns: {list(out.targets)})", stacklevel=3)
        for kind, values in (("model_size", out.model_size), ("n_tokens", out.n_tokens)):
            finite = values[np.isfinite(values)]
            for v in (finite.min(), finite.max()) if finite.size else ():
                msg = extrapolation_message(self.scale_extrapolation(**{kind: v})[kind], kind)
                if msg:
                    warnings.warn(f"{data.name}: {msg}", ScaleExtrapolationWarning, stacklevel=3)
        return out

    def scale_extrapolation(self, model_size: float | None = None, n_tokens: float | None = None) -> dict:
        """Where raw ``model_size`` (parameters) and ``n_tokens`` (tokens) lie against the scales this fit was
        fitted on: ``{kind: {"value", "fitted_min", "fitted_max", "factor", "far"}}`` (:func:`mixjax.units.extrapolation`)."""
        scales = np.asarray(self.record.scales or [[np.nan, np.nan]], dtype=np.float64).reshape(-1, 2)
        out = {}
        for j, (kind, v) in enumerate((("model_size", model_size), ("n_tokens", n_tokens))):
            if v is not None:
                out[kind] = extrapolation(v, scales[:, j], kind)
        return out

    def predict(self, data: MixtureData) -> np.ndarray:
        """Predicted losses ``(n, V)`` for every row of ``data`` (in the law's target order: the training domains
        for per-domain laws). Mixtures are matched to the fit's domains by name."""
        data = self._aligned(data, with_targets=False)
        arrays, _ = prepare(self.law, data, mask_zero_weight=False, dtype=self.config.dtype)
        return np.asarray(predict_rows(self.law, arrays.h, arrays.N, arrays.D))

    def evaluate(self, data: MixtureData, *, mask_zero_weight: bool | None = None) -> dict:
        """MRE / MAE / RMSE (overall and per target) on ``data``, over the cells a fit of this law counts; domains
        and targets are matched to the fit's by name."""
        if mask_zero_weight is None:
            mask_zero_weight = self.record.mask_zero_weight
        data = self._aligned(data, with_targets=True)
        arrays, obs = prepare(self.law, data, mask_zero_weight=mask_zero_weight, dtype=self.config.dtype)
        pred = np.asarray(predict_rows(self.law, arrays.h, arrays.N, arrays.D))
        return metric_table(pred, obs, np.isfinite(obs), list(self.record.targets))

    def __repr__(self) -> str:
        return (
            f"Fit(law={self.record.law}, n_params={self.n_params}, loss={self.loss:.6g}, status={self.status.name}, "
            f"starts={self.record.starts} {dict(self.record.start_status or {})}, data={self.record.data!r} rows={self.record.n_rows})"
        )


def fit(
    law,
    data: MixtureData,
    *,
    starts: int = 16,
    seed: int = 0,
    objective: str | AbstractObjective = "mse",
    optimizer: str | _engine.AbstractSolver = "lbfgs",
    max_steps: int | None = None,
    weights: Any = None,
    mask_zero_weight: bool | None = None,
    dtype: str | None = None,
    throw: bool = True,
    init: AbstractLaw | None = None,
    progress=None,
    polish: bool = False,
    **config_kwargs,
) -> Fit:
    """Fit a law to a dataset from ``starts`` random initializations in one compiled, vmapped call; keep the best.

    Args:
      law: a law name (``"capacity_noise"``), an :class:`AbstractLaw` subclass, or an instance (used as start 0).
        A name or class is resolved for ``data`` through :meth:`AbstractLaw.for_data`: a law that must know its
        table's layout (``exposure``, ``exposure_joint``) is bound to the table's phases and unique tokens, as
        :func:`mixjax.compare` binds it (rules for instances: :func:`law_for_data`).
      data: a :class:`MixtureData`; every row is used with its own model size and token count.
      starts: number of random starting points: start i is drawn by ``law.init`` with the key
        ``jax.random.fold_in(jax.random.PRNGKey(seed), i)``, so it is the same whatever the number of starts,
        devices or processes (:func:`init_starts`). A batch whose starts, row weights and results cannot fit in
        memory is refused before anything is allocated.
      seed: an integer in ``[0, 2**32)``.
      objective, optimizer, max_steps, dtype, **config_kwargs: see :class:`FitConfig`: a name or an object
        (``objective=mixjax.HuberLog(1e-2)``, ``optimizer=mixjax.LBFGS(memory=10)``); dtype defaults to float64
        when JAX has 64-bit floats enabled, float32 otherwise.
      weights: optional ``(n,)`` non-negative row weights (a bootstrap resample is expressed this way).
      mask_zero_weight: exclude cells whose own domain weight is 0 (default: the law's preference).
      throw: raise :class:`FitFailedError` if every start failed (otherwise return the failed fit with status
        ``nonfinite``); a fit at the step limit or out of range is returned with a warning, never raised.
      init: a batch of starting points (a law whose arrays have a leading axis, e.g. :func:`chinchilla_grid`);
        replaces the random draws (``starts`` is then its length).
      progress: optional callable ``progress(done, total)`` (see :func:`solve`).
      polish: with ``dtype="float32"`` (the fast path for many starts on an accelerator), continue the best start
        in float64 (one more fit of one member, up to ``max_steps`` steps; needs ``jax_enable_x64``): the returned
        law, objective, status and ``config`` are float64, the float32 starts stay in ``starts``, and
        ``record.polish`` records the float32 objective and the steps the polish took.

    The starts are sharded over this process's devices; under ``jax.distributed`` (:mod:`mixjax.distributed`)
    every process makes the same call, fits its share of the starts and returns the same fit.
    """
    dtype = default_dtype() if dtype is None else dtype
    if polish and dtype != "float32":
        raise ValueError(f"polish refines a float32 fit in float64; this fit is already {dtype}")
    if polish and not jax.config.jax_enable_x64:
        raise ValueError("polish=True needs 64-bit floats in JAX: call jax.config.update('jax_enable_x64', True) at the start of the program")
    cfg = FitConfig(objective=objective, optimizer=optimizer, max_steps=max_steps, dtype=dtype, **config_kwargs)
    cls, law = law_for_data(law, data, dtype)
    if init is not None:
        if not isinstance(init, cls) and isinstance(init, AbstractLaw) and issubclass(cls, type(init)):
            init = _bind_instance(init, cls, data, dtype, batched=True)
        if not isinstance(init, cls):
            raise TypeError(f"init must be a batch of {cls.__name__} starting points, got {type(init).__name__}")
        starts = int(jax.tree_util.tree_leaves(eqx.filter(init, eqx.is_inexact_array))[0].shape[0])
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    seed = check_seed(seed)
    arrays, _ = prepare(cls, data, mask_zero_weight=mask_zero_weight, dtype=dtype)
    summary = summarize(arrays, data)
    template = law if isinstance(law, AbstractLaw) else None
    given = None
    if init is not None:
        given = jax.tree_util.tree_map(lambda x: x.astype(jnp.dtype(dtype)) if eqx.is_inexact_array(x) else x, init)
    k = check_first_start(template or cls, summary, dtype, arrays, data, given)  # shapes checked before anything is allocated
    cfg = cfg.resolved(k)
    n_cells = int(np.asarray(arrays.mask).sum())
    if n_cells < k:
        raise DataError(
            f"{data.name!r} has {n_cells} measured loss cells for the {k} free parameters of {cls.name}: the fit is "
            "underdetermined; add rows or choose a law with fewer parameters"
        )
    check_batch_memory(starts, k, arrays, cfg, what=f"starts of {cls.name}", fewer="fewer starts")
    starts_batch = given if given is not None else init_starts(template or cls, jax.random.PRNGKey(seed), starts, summary, dtype)
    if weights is None:
        w = np.ones(data.n_rows)
    else:
        w = np.array(weights, dtype=np.float64, copy=True)
        if w.shape != (data.n_rows,):
            raise ValueError(f"weights has shape {w.shape}, expected ({data.n_rows},)")
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
    W = jnp.broadcast_to(jnp.asarray(w, jnp.dtype(dtype)), (starts, data.n_rows))
    t0 = time.perf_counter()
    res = solve(starts_batch, W, arrays, cfg, progress=progress)
    jax.block_until_ready(res.loss)
    elapsed = time.perf_counter() - t0
    best, idx = best_of(res)
    status = Status(int(best.status))
    if throw and status == Status.nonfinite:
        raise FitFailedError(f"every one of {starts} starts of {cls.name} failed (non-finite objective); check the data and the starts")
    polished = None
    if polish and status != Status.nonfinite:
        cfg64 = dataclasses.replace(cfg, dtype="float64")
        arrays64, _ = prepare(cls, data, mask_zero_weight=mask_zero_weight, dtype="float64")
        law64 = jax.tree_util.tree_map(lambda x: x[None].astype(jnp.float64) if eqx.is_inexact_array(x) else x, best.law)
        one = solve(law64, jnp.asarray(w, jnp.float64)[None], arrays64, cfg64)
        polished = {"loss_float32": float(best.loss), "num_steps": int(one.num_steps[0]), "status_float32": status.name}
        best = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, one)
        status, cfg = Status(int(best.status)), cfg64
    away = ", ".join(f"{k} outside [{lo:g}, {hi:g}]" for k, (lo, hi) in best.law.out_of_range().items())
    if status == Status.out_of_range:
        warnings.warn(f"the best fit of {cls.name} to {data.name!r} has {away}: the fit ran away (status out_of_range); "
                      "the law's form may not suit this data", OutOfRangeWarning, stacklevel=2)
    if status == Status.max_steps:
        warnings.warn(f"the best of {starts} starts of {cls.name} on {data.name!r} stopped at max_steps={cfg.max_steps} "
                      "before converging (status max_steps): pass a larger max_steps"
                      + (f"; it was running away ({away})" if away else ""), MaxStepsWarning, stacklevel=2)
    y_used = np.asarray(arrays.mask)
    record = FitRecord(
        law=cls.name,
        law_reference=cls.reference,
        data=data.name,
        n_rows=data.n_rows,
        n_cells=n_cells,
        data_sha256=data_fingerprint(data),
        domains=list(data.domains),
        phases=None if getattr(data, "phases", None) is None else list(data.phases),
        phase_shares=None if getattr(data, "phase_shares", None) is None else [float(x) for x in data.phase_shares],
        targets=list(data.domains) if cls.per_domain else list(data.targets),
        scales=[[a, b] for a, b, _ in data.scales()],
        units={"model_size": "millions of parameters", "n_tokens": "billions of tokens"},
        mask_zero_weight=bool(cls.mask_zero_weight if mask_zero_weight is None else mask_zero_weight),
        cells_per_target=y_used.sum(0).tolist(),
        loss_scale=cfg.objective_object.loss_scale,
        init=(f"{starts} given starting points" if init is not None else
              f"{cls.name}.init random draws, start i from fold_in(PRNGKey({seed}), i), {starts} starts" + (" (start 0 = given law)" if template else "")),
        seed=seed,
        starts=starts,
        best_start=int(idx),
        start_status=status_counts(res.status),
        weights="uniform" if weights is None else "user row weights",
        seconds=elapsed,
        backend=jax.default_backend(),
        polish=polished,
    )
    return Fit(law=best.law, loss=float(best.loss), status=status, num_steps=int(best.num_steps), starts=res, config=cfg, record=record)


def fit_chinchilla(data: MixtureData, grid: AbstractLaw | None = None, *, max_steps: int | None = None, huber_delta: float = 1e-3,
                   dtype: str | None = None, **kwargs) -> Fit:
    """Fit :class:`mixjax.ChinchillaLaw` the Chinchilla way (Hoffmann et al. 2022; Besiroglu et al. 2024): Huber loss
    (delta 1e-3) on log losses from every point of a grid of starts (default :func:`mixjax.chinchilla_grid`), all in
    one batched call; the best is kept."""
    from .laws import ChinchillaLaw, chinchilla_grid

    dtype = default_dtype() if dtype is None else dtype
    if grid is None:
        grid = chinchilla_grid(data.n_targets, dtype=dtype)
    return fit(ChinchillaLaw, data, init=grid, objective="huber_log", huber_delta=huber_delta, max_steps=max_steps, dtype=dtype, **kwargs)
