"""skflow: flow-matching density estimation for scikit-learn."""

from .density import FlowMatchingDensity
from .outlier import FlowMatchingOutlierDetector

__version__ = "0.1.0"

__all__ = ["FlowMatchingDensity", "FlowMatchingOutlierDetector", "__version__"]
