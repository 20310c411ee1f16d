"""scikit-learn's own estimator checks, on two fast configurations."""

from _data import EXACT, TINY
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflow import (
    ConditionalFlowMatchingDensity,
    FlowMatchingDensity,
    FlowMatchingOutlierDetector,
)
from skflow._ode import ADAPTIVE_SOLVERS, ROWWISE_SOLVERS

# Fixed-step float64: every row is integrated independently of the others.
FIXED_STEP = FlowMatchingDensity(**EXACT, random_state=0)
# As the defaults: the rowwise solver in float32, and in float64.
DEFAULT_LIKE = FlowMatchingDensity(**TINY, random_state=0)
ROWWISE_FLOAT64 = FlowMatchingDensity(**TINY, dtype="float64", random_state=0)
# The HollowNet field, in float64 so that every check holds to round-off.
HOLLOW = FlowMatchingDensity(
    **TINY, architecture="hollow", dtype="float64", random_state=0
)
DETECTORS = [
    FlowMatchingOutlierDetector(**EXACT, contamination=0.1, random_state=0),
    # contamination="auto": the threshold is a level of the model's own
    # density (see _expected_failed_checks).
    FlowMatchingOutlierDetector(**{**TINY, "max_iter": 500}, random_state=0),
]

# p(y | X), as a regressor: fixed steps in float64, and the defaults' solver.
CONDITIONAL = [
    ConditionalFlowMatchingDensity(**EXACT, random_state=0),
    ConditionalFlowMatchingDensity(**TINY, random_state=0),
]


def _expected_failed_checks(estimator):
    failures = {}
    if isinstance(estimator, ConditionalFlowMatchingDensity):
        reason = (
            "the check calls score_samples(X) with X alone, and a conditional "
            "log density needs y; tests/test_conditional.py checks that "
            "score_samples(X, y) and predict of a row do not depend on the "
            "other rows or their order"
        )
        return {
            "check_methods_subset_invariance": reason,
            "check_methods_sample_order_invariance": reason,
            "check_sample_weight_equivalence_on_dense_data": (
                "training draws random minibatches: weighting rows and "
                "repeating them give the same training distribution but "
                "different draws, hence different networks and predictions"
            ),
        }
    if isinstance(estimator, FlowMatchingOutlierDetector):
        # Only the detector has predict/decision_function, which this check
        # compares; for the density estimator it checks nothing.
        failures["check_sample_weight_equivalence_on_dense_data"] = (
            "training draws random minibatches: weighting rows and repeating "
            "them give the same training distribution but different draws "
            "(the check shuffles the weighted rows), hence different networks"
        )
    if getattr(estimator, "contamination", None) == "auto":
        # Measured: 0 of the 300 blob points fall below the level for 500 or
        # 1,000 steps, widths 16 or 32; a perfect model leaves about 3 there
        # (and none 5% of the time). The float contamination detector above
        # passes both checks.
        reason = (
            "contamination='auto' flags the points below the density level "
            "that holds 99% of the model's own mass, not a share of the "
            "training data: on the check's 300 points a small model may flag "
            "none, while the check wants both labels"
        )
        failures["check_outliers_fit_predict"] = reason
        failures["check_outliers_train"] = reason
    if estimator.solver in ADAPTIVE_SOLVERS:
        reason = (
            "dopri5 (and the divergence quadrature) choose their steps (and "
            "panels) for all rows solved together, from an error norm summed "
            "over them in float32, so a row's log density moves within the "
            "solver tolerance with the other rows of the call and their order"
        )
        failures["check_methods_subset_invariance"] = reason
        failures["check_methods_sample_order_invariance"] = reason
    elif estimator.solver in ROWWISE_SOLVERS and estimator.dtype == "float32":
        # Reordering keeps the batch's shape, so sample order passes.
        failures["check_methods_subset_invariance"] = (
            "float32 matrix products round differently for batches of other "
            "shapes, and each row's step control carries that round-off into "
            "its score (up to a few 1e-6 nats, above the check's rtol of 1e-7); in "
            "float64 the check passes, and tests/test_density.py bounds the "
            "float32 differences"
        )
    return failures


@parametrize_with_checks(
    [FIXED_STEP, DEFAULT_LIKE, ROWWISE_FLOAT64, HOLLOW, *DETECTORS, *CONDITIONAL],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
