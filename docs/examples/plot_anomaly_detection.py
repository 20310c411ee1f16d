"""Anomaly detection: flag anomalies with FlowMatchingOutlierDetector and
compare its ROC curve with IsolationForest's.

Normal data: two interleaved moons. Anomalies: points spread uniformly over
the plot. Run with ``python docs/examples/anomaly_detection.py``; it writes
``anomaly_detection_roc.png`` when matplotlib is installed.
"""

import numpy as np
from sklearn.datasets import make_moons
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score, roc_curve

from skflow import FlowMatchingOutlierDetector

rng = np.random.RandomState(0)
X_train, _ = make_moons(n_samples=2000, noise=0.08, random_state=0)
X_normal, _ = make_moons(n_samples=500, noise=0.08, random_state=1)
X_anomalies = rng.uniform(low=[-1.5, -1.0], high=[2.5, 1.5], size=(100, 2))
X_test = np.vstack([X_normal, X_anomalies])
is_anomaly = np.r_[np.zeros(len(X_normal)), np.ones(len(X_anomalies))]

detector = FlowMatchingOutlierDetector(max_iter=1500, random_state=0).fit(X_train)
labels = detector.predict(X_test)
print(f"offset_ (log density threshold): {detector.offset_:.2f}")
print(
    f"flagged: {np.mean(labels[is_anomaly == 0] == -1):.1%} of normal points, "
    f"{np.mean(labels[is_anomaly == 1] == -1):.1%} of anomalies"
)

forest = IsolationForest(random_state=0).fit(X_train)
curves = {}
for name, model in [("skflow", detector), ("IsolationForest", forest)]:
    anomaly_score = -model.score_samples(X_test)  # higher = more anomalous
    curves[name] = roc_curve(is_anomaly, anomaly_score)
    print(f"{name:>16} ROC-AUC: {roc_auc_score(is_anomaly, anomaly_score):.3f}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no figure.")
else:
    fig, ax = plt.subplots(figsize=(4, 4))
    for name, (fpr, tpr, _) in curves.items():
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig("anomaly_detection_roc.png", dpi=120)
    print("wrote anomaly_detection_roc.png")
