"""Model files written by skflow 0.3.2 (commit 632d4a4), for the tests that
files of format 2 still load. Run from the repository root, with skflow 0.3.2
installed from a checkout of that commit (``git worktree add``):

    python tests/data/make_0_3_2_files.py
"""

import numpy as np

import skflow
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector


def main():
    X = np.random.RandomState(0).normal(size=(100, 3))
    X[:, 2] = np.round(X[:, 2] * 3)  # an integer column: dequantized
    tiny = {"hidden_layer_sizes": (16, 16), "max_iter": 40, "batch_size": 32}
    est = FlowMatchingDensity(**tiny, random_state=0).fit(X)
    det = FlowMatchingOutlierDetector(
        **tiny, contamination=0.1, solver="rk4", n_steps=4, random_state=1
    ).fit(X)
    skflow.save(est, "tests/data/density-0.3.2.skflow")
    skflow.save(det, "tests/data/detector-0.3.2.skflow")
    np.savez(
        "tests/data/expected-0.3.2.npz",
        X=X[:20],
        density_scores=est.score_samples(X[:20]),
        density_samples=est.sample(5, random_state=0),
        detector_scores=det.score_samples(X[:20]),
        detector_offset=det.offset_,
    )


if __name__ == "__main__":
    assert skflow.__version__ == "0.3.2", skflow.__version__
    main()
