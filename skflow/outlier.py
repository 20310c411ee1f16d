"""FlowMatchingOutlierDetector: novelty detection by flow-matching log density."""

from __future__ import annotations

from numbers import Real
from typing import ClassVar

import numpy as np
from sklearn.base import OutlierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._docstrings import numpydoc_section, replace_entry
from ._flow_estimator import restored_on_failure
from .density import FlowMatchingDensity

__all__ = ["FlowMatchingOutlierDetector"]

# contamination="auto": the offset is the log density below which the
# model itself puts AUTO_TAIL of its probability mass, estimated from
# AUTO_SAMPLES draws of the model.
AUTO_TAIL = 0.01
AUTO_SAMPLES = 4000


class FlowMatchingOutlierDetector(OutlierMixin, FlowMatchingDensity):
    # The docstring is assembled below from FlowMatchingDensity's, so the
    # shared parameters are documented once.

    _spreads_atoms: ClassVar[bool] = True

    _parameter_constraints: ClassVar[dict] = {
        **FlowMatchingDensity._parameter_constraints,
        "contamination": [
            StrOptions({"auto"}),
            Interval(Real, 0, 0.5, closed="right"),
        ],
    }

    def __init__(
        self,
        *,
        contamination="auto",
        path="fm",
        sigma=0.01,
        architecture="mlp",
        hidden_layer_sizes="auto",
        max_iter="auto",
        likelihood_max_iter=0,
        batch_size=512,
        learning_rate=2e-3,
        validation_fraction=0.1,
        n_iter_no_change=10,
        dequantize=True,
        solver="dopri5-rowwise",
        n_steps=None,
        rtol=1e-6,
        atol=1e-6,
        divergence="exact",
        n_probes=1,
        inference_batch_size="auto",
        device="auto",
        dtype="float32",
        random_state=None,
        verbose=0,
    ):
        # Every other argument goes to FlowMatchingDensity unchanged.
        arguments = dict(locals())
        density_params = {
            name: value
            for name, value in arguments.items()
            if name not in {"self", "contamination", "__class__"}
        }
        super().__init__(**density_params)
        self.contamination = contamination

    def fit(self, X, y=None, sample_weight=None):
        """Fit the density model on (mostly) normal data and set the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.

        y : None
            Ignored. This parameter exists only for compatibility with
            :class:`~sklearn.pipeline.Pipeline`.

        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the training samples (see
            :meth:`FlowMatchingDensity.fit`); the contamination quantile is
            not weighted.

        Returns
        -------
        self : object
            The fitted detector.
        """
        with restored_on_failure(self):
            super().fit(X, y, sample_weight=sample_weight)
            self.offset_ = self._offset(X)
        return self

    def _offset(self, X) -> float:
        if self.contamination == "auto":
            # A property of the model, not of the training sample: the
            # density level whose super-level set holds 1 - AUTO_TAIL of the
            # model's mass, estimated from the model's own samples.
            samples = self.sample(AUTO_SAMPLES, random_state=self._probe_seed)
            # Scored unvalidated: they have no feature names, X might.
            return float(np.quantile(self._log_density(samples), AUTO_TAIL))
        return float(np.quantile(self.score_samples(X), self.contamination))

    def decision_function(self, X):
        """Log density minus ``offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to classify.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``.
        """
        check_is_fitted(self)
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Label each sample +1 (inlier) or -1 (outlier).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to classify.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 where ``decision_function(X) >= 0``, -1 elsewhere.
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)


_DEQUANTIZE = """\
    dequantize : bool, default=True
        As in :class:`FlowMatchingDensity`, the whole-number columns are
        modelled as X + U, U ~ U[0, 1). The detector also spreads the atoms
        of the other columns: a value that carries at least 5% of the
        training weight (a zero amount, a floor, a default) is an atom, and
        an entry equal to it is moved to a uniform draw within half a
        standard deviation of its column around it, once when fitting and,
        when scoring, by a draw from the row's own values (``atoms_`` lists
        them). A density of the values as they are puts a spike about
        ``sigma`` wide on an atom, so every row on it would look typical
        whatever its other columns. Columns of levels keep their spikes,
        as every row sits on one there: those of at most 20 distinct
        values, of more than two atoms (rounded measurements) or of less
        than 5% of the weight off the atoms. False treats every column as
        continuous and spreads no atom.
"""
_ATOMS = """\
    atoms_ : ndarray of shape (``n_features_in_``, k)
        The atoms of each column (row j holds column j's), padded with NaN;
        k is the most atoms of one column, 0 where no column has any.
"""
_PARAMETERS = replace_entry(
    numpydoc_section(FlowMatchingDensity.__doc__, "Parameters"),
    "dequantize",
    _DEQUANTIZE,
)
FlowMatchingOutlierDetector.__doc__ = f"""\
Novelty detection with a flow-matching density model.

    Fits :class:`FlowMatchingDensity` on normal data and flags the points
    whose log density falls below a threshold, ``offset_``. It follows
    scikit-learn's outlier-detector conventions (as IsolationForest and
    ``LocalOutlierFactor(novelty=True)``): ``score_samples`` is the log
    density (higher = more normal), ``decision_function = score_samples -
    offset_`` is negative for outliers, ``predict`` returns +1 / -1.

    Parameters
    ----------
    contamination : "auto" or float, default="auto"
        How the threshold ``offset_`` is set.

        - ``"auto"``: the log-density level below which the fitted model
          itself puts {AUTO_TAIL:.0%} of its probability mass (estimated from
          {AUTO_SAMPLES} samples of the model). It needs no guess of how
          contaminated the data are: if the model is right, {AUTO_TAIL:.0%}
          of new normal points are flagged, whatever the data. (A density
          has no natural scale, so a fixed offset like IsolationForest's
          -0.5 would mean nothing.)
        - a float in (0, 0.5]: the expected share of outliers in the
          training data; ``offset_`` is that quantile of the training
          samples' log densities.

{_PARAMETERS}
    Attributes
    ----------
    offset_ : float
        The log-density threshold: ``decision_function = score_samples -
        offset_``.

{_ATOMS}
{numpydoc_section(FlowMatchingDensity.__doc__, "Attributes")}
    See Also
    --------
    FlowMatchingDensity : The density model, with every parameter above.
    sklearn.ensemble.IsolationForest : Isolation-based outlier detection.
    sklearn.neighbors.LocalOutlierFactor : Local density outlier detection.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import FlowMatchingOutlierDetector
    >>> X = np.random.RandomState(0).normal(size=(300, 2))
    >>> detector = FlowMatchingOutlierDetector(
    ...     hidden_layer_sizes=(32, 32), max_iter=300, random_state=0
    ... ).fit(X)
    >>> detector.predict([[0.0, 0.0], [6.0, 6.0]])
    array([ 1, -1])
    """
