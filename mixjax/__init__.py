"""mixjax: differentiable, batched fitting of data-mixing scaling laws in JAX.

Importing mixjax changes no global setting. float64 fits need 64-bit floats in JAX, which the program turns on
itself (``jax.config.update("jax_enable_x64", True)`` before creating arrays); without it fits default to float32.
"""

from importlib.metadata import PackageNotFoundError as _PNF
from importlib.metadata import version as _version

from .resampling import BootstrapResult as BootstrapResult
from .resampling import bootstrap as bootstrap
from .comparison import Comparison as Comparison
from .comparison import compare as compare
from .data import DataError as DataError
from .data import MixtureData as MixtureData
from .data import from_arrays as from_arrays
from .data import from_dataframe as from_dataframe
from .data import list_datasets as list_datasets
from .data import load_csv as load_csv
from .data import load_dataset as load_dataset
from .fitting import Fit as Fit
from .fitting import FitConfig as FitConfig
from .fitting import OutOfRangeWarning as OutOfRangeWarning
from .fitting import MaxStepsWarning as MaxStepsWarning
from .fitting import fit as fit
from .fitting import init_starts as init_starts
from .fitting import solve as solve
from .io import load_ensemble as load_ensemble
from .io import load_fit as load_fit
from .io import save_fit as save_fit
from .laws import LAWS as LAWS
from .laws import AbstractLaw as AbstractLaw
from .laws import CapacityNoiseLaw as CapacityNoiseLaw
from .laws import CapacityNoisePseudoCountLaw as CapacityNoisePseudoCountLaw
from .laws import AutoScaleLaw as AutoScaleLaw
from .laws import BiMixLaw as BiMixLaw
from .laws import CapacityOnlyLaw as CapacityOnlyLaw
from .laws import CapacityRunTokensLaw as CapacityRunTokensLaw
from .laws import ChinchillaLaw as ChinchillaLaw
from .laws import ChinchillaMixtureLaw as ChinchillaMixtureLaw
from .laws import ChinchillaMixturePerTargetLaw as ChinchillaMixturePerTargetLaw
from .laws import ExponentialLaw as ExponentialLaw
from .laws import LogLinearLaw as LogLinearLaw
from .laws import PowerLinearLaw as PowerLinearLaw
from .laws import ShukorAdditiveLaw as ShukorAdditiveLaw
from .laws import ShukorJointLaw as ShukorJointLaw
from .laws import ShukorMixtureLaw as ShukorMixtureLaw
from .laws import chinchilla_grid as chinchilla_grid
from .fitting import fit_chinchilla as fit_chinchilla
from .laws import get_law as get_law
from .laws import law_from_function as law_from_function
from .laws import n_params as n_params
from .laws import register as register
from .laws import unregister as unregister
from .mixture import ExtrapolationWarning as ExtrapolationWarning
from .mixture import FixedOptimumWarning as FixedOptimumWarning
from .mixture import MixtureEnsemble as MixtureEnsemble
from .mixture import MixtureResult as MixtureResult
from .mixture import MixtureSpec as MixtureSpec
from .mixture import optimize_mixture as optimize_mixture
from .mixture import optimize_mixture_ensemble as optimize_mixture_ensemble
from .mixture import PhasedMixtureError as PhasedMixtureError
from .mixture import DegenerateOptimumWarning as DegenerateOptimumWarning
from .calibration import CalibratedOptimum as CalibratedOptimum
from .calibration import calibrate_optimum as calibrate_optimum
from .laws._base import mixture_frame as mixture_frame
from .swarm import load_phase_table as load_phase_table
from .swarm import load_ratios_metrics as load_ratios_metrics
from .swarm import load_swarm as load_swarm
from .swarm import load_unique_tokens as load_unique_tokens
from .swarm import with_unique_tokens as with_unique_tokens
from .units import Scale as Scale
from .units import ScaleError as ScaleError
from .units import ScaleExtrapolationWarning as ScaleExtrapolationWarning
from .design import Suggestion as Suggestion
from .design import suggest as suggest
from .metrics import mae as mae
from .metrics import mre as mre
from .metrics import rmse as rmse
from .results import Status as Status
from .results import Solution as Solution
from .results import FitRecord as FitRecord
from .results import BootstrapRecord as BootstrapRecord
from .results import SuggestionRecord as SuggestionRecord
from .results import FitFailedError as FitFailedError
from .progress import ProgressBar as ProgressBar
from . import objectives as objectives
from . import solvers as solvers
from .objectives import AbstractObjective as AbstractObjective
from .objectives import HuberLog as HuberLog
from .objectives import MSE as MSE
from .objectives import Relative as Relative
from .solvers import AbstractSolver as AbstractSolver
from .solvers import Adam as Adam
from .solvers import LBFGS as LBFGS
from .solvers import LevenbergMarquardt as LevenbergMarquardt

try:
    __version__ = _version("mixjax")
except _PNF:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
