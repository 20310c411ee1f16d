"""skflow: flow-matching density estimation for scikit-learn."""

from .density import FlowMatchingDensity

__version__ = "0.1.0"

__all__ = ["FlowMatchingDensity", "__version__"]
