"""skflow: flow-matching density estimation for scikit-learn."""

from ._version import __version__
from .blockwise import dask_score_samples
from .density import FlowMatchingDensity
from .outlier import FlowMatchingOutlierDetector
from .persistence import load, save

__all__ = [
    "FlowMatchingDensity",
    "FlowMatchingOutlierDetector",
    "dask_score_samples",
    "load",
    "save",
    "__version__",
]
