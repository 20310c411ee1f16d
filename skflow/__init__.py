"""skflow: flow-matching density estimation for scikit-learn."""

from ._inference import solver_stats
from ._version import __version__
from .blockwise import dask_score_samples
from .conditional import ConditionalFlowMatchingDensity
from .density import FlowMatchingDensity
from .outlier import FlowMatchingOutlierDetector
from .persistence import load, save

__all__ = [
    "ConditionalFlowMatchingDensity",
    "FlowMatchingDensity",
    "FlowMatchingOutlierDetector",
    "dask_score_samples",
    "load",
    "save",
    "solver_stats",
    "__version__",
]
