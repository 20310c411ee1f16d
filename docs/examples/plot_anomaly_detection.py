"""
Anomaly detection against IsolationForest
=========================================

Fit :class:`skflow.FlowMatchingOutlierDetector` on normal data (two
interleaved moons), flag anomalies (points spread uniformly over the plot),
and compare its ROC curve with IsolationForest's. The detector's threshold,
``offset_``, is the log density below which the model itself puts 1% of its
mass (``contamination="auto"``).
"""

import matplotlib.pyplot as plt
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

# %%
# ROC curves: the anomaly score is minus ``score_samples`` for both.
forest = IsolationForest(random_state=0).fit(X_train)
fig, (ax_roc, ax_flags) = plt.subplots(1, 2, figsize=(9, 4))
for name, model in [("skflow", detector), ("IsolationForest", forest)]:
    anomaly_score = -model.score_samples(X_test)
    fpr, tpr, _ = roc_curve(is_anomaly, anomaly_score)
    auc = roc_auc_score(is_anomaly, anomaly_score)
    ax_roc.plot(fpr, tpr, label=f"{name} (ROC-AUC {auc:.3f})")
ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
ax_roc.set(xlabel="false positive rate", ylabel="true positive rate")
ax_roc.legend()
ax_flags.scatter(*X_test[labels == 1].T, s=4, color="tab:blue", label="inlier")
ax_flags.scatter(*X_test[labels == -1].T, s=8, color="tab:red", label="flagged")
ax_flags.set(title="predict() on the test points", aspect="equal")
ax_flags.legend(loc="lower left")
fig.tight_layout()
