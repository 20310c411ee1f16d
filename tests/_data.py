"""Shared test data and estimator configurations.

Each configuration is a dict of ``FlowMatchingDensity`` parameters without
``random_state`` (tests pass their own seed); a test that needs more steps or
larger batches says so with ``{**TINY, "max_iter": 60}``.
"""

import numpy as np

# A fast float32 network, for tests of plumbing: validation, round trips,
# errors, scikit-learn's checks. It learns little in 20 steps.
TINY = {"hidden_layer_sizes": (16, 16), "max_iter": 20, "batch_size": 32}

# Fixed-step float64 solves integrate every row on its own, so results may
# differ only by the round-off of the matrix products whatever the other rows
# of a call, their order or the chunking: tests compare them to ~1e-12.
FIXED_STEPS = {"solver": "rk4", "n_steps": 4, "dtype": "float64"}
EXACT = {**TINY, **FIXED_STEPS}

# A network that learns a 2-D blob in 100 steps, trained on every row for
# every step (no held-out split, no early stopping).
SMALL = {
    "hidden_layer_sizes": (32, 32),
    "max_iter": 100,
    "batch_size": 64,
    "n_iter_no_change": None,
}
SMALL_EXACT = {**SMALL, **FIXED_STEPS}


def blobs(n=200, d=2, seed=0):
    """n rows of a correlated Gaussian in d dimensions, off the origin."""
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)


def record_training_argument(monkeypatch, name):
    """The values of ``train_vector_field``'s keyword ``name`` (None where
    not passed) in every training from now on, in order (they still train)."""
    import skflow._flow_estimator

    seen = []
    train = skflow._flow_estimator.train_vector_field

    def recording(*args, **kwargs):
        seen.append(kwargs.get(name))
        return train(*args, **kwargs)

    monkeypatch.setattr(skflow._flow_estimator, "train_vector_field", recording)
    return seen
