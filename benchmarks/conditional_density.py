"""Conditional density quality of ConditionalFlowMatchingDensity() against its peers.

The metric is the mean test conditional log-likelihood log p(y | x), in
nats per test row and in y's units (higher is better), over three seeds;
fit and score times are measured in the same run.

Data (nothing is downloaded):

- three sets with a known conditional density, whose mean log p(y | x) on
  the test rows (the truth, the ceiling) is reported beside the models:
  ``heteroscedastic`` (x ~ U(-2, 2), y = sin(2x) + (0.1 + 0.3|x|) eps),
  ``bimodal`` (x ~ U(-2, 2), y = +-x + 0.1 eps with equal odds: two modes
  for |x| large, one near 0) and ``banana`` (a 2-D y given a 2-D x:
  a Gaussian whose correlation follows x2, bent into a banana whose
  curvature follows x1);
- real regression sets: scikit-learn's bundled ``diabetes``, and
  statsmodels' bundled ``engel`` (food expenditure given income) and
  ``randhie`` (yearly doctor visits given 9 covariates: a count with 31%
  zeros, dequantized). Each seed draws its own split: 80/20, at most
  ``N_TRAIN`` rows to fit and ``N_TEST`` to score.

Models:

- skflow: ``ConditionalFlowMatchingDensity(random_state=seed)`` (on the
  count target with ``dequantize=True``);
- a homoscedastic Gaussian: ``LinearRegression`` and the covariance of its
  training residuals (full, for a 2-D y);
- ``GaussianProcessRegressor`` (single targets only): ConstantKernel * RBF
  with one length scale per feature + WhiteKernel, ``normalize_y=True``, on
  standardized X, fitted on at most 1,000 training rows (``SIZES``); its
  predictive density N(y | mean, std^2), std including the white noise;
- zuko's conditional neural spline flow, ``zuko.flows.NSF(features=n_targets,
  context=n_features, transforms=3, hidden_features=(128, 128))``, trained
  by maximum likelihood with Adam on standardized X and y, with early
  stopping on 10% of the training rows, for at most as many steps as
  skflow's ``max_iter="auto"`` allows on those rows.

Run from the repository root on an idle machine (needs the ``bench``
extra: zuko and statsmodels); writes ``results/conditional_density.{json,md}``:

    python -m benchmarks.conditional_density

``--quick`` runs one seed on small sets with a few dozen steps, a smoke
test, and writes ``results/conditional_density_quick.{json,md}`` instead.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from benchmarks._common import environment, environment_line, timed, write_results
from benchmarks.density_peers import fit_by_maximum_likelihood
from skflow import ConditionalFlowMatchingDensity
from skflow._recipe import Recipe

SEEDS = (0, 1, 2)
# rows to fit (at most), rows to score (at most), GP's training rows (at most)
SIZES = {"full": (4_000, 2_000, 1_000), "quick": (300, 200, 200)}
QUICK_STEPS = 60
SKFLOW = "skflow (defaults)"
FIXED_DRAW = "skflow (defaults, on the peers' fixed draw)"
GAUSSIAN = "Gaussian (linear mean, residual covariance)"
GP = "GP (ARD RBF + white noise)"
NSF = "NSF (zuko, conditional)"
TRUTH = "truth (the known density)"


# -- the peers ---------------------------------------------------------------


def _as_2d(y):
    y = np.asarray(y, dtype=np.float64)
    return y.reshape(len(y), -1)


class LinearGaussian:
    """y | x ~ N(a + B x, S): least squares and the residuals' covariance
    (divided by n - n_features - 1)."""

    def fit(self, X, y):
        Y = _as_2d(y)
        self.model_ = LinearRegression().fit(X, Y)
        residuals = Y - self.model_.predict(X)
        dof = max(1, len(Y) - X.shape[1] - 1)
        self.covariance_ = residuals.T @ residuals / dof
        return self

    def score_samples(self, X, y):
        residuals = _as_2d(y) - self.model_.predict(X)
        gaussian = multivariate_normal(
            np.zeros(len(self.covariance_)), self.covariance_
        )
        return np.atleast_1d(gaussian.logpdf(residuals))


class GaussianProcessDensity:
    """The GP's predictive density of a single target, log N(y | mean, std^2);
    fitted on at most ``max_rows`` training rows drawn at random."""

    def __init__(self, max_rows, random_state=0):
        self.max_rows = max_rows
        self.random_state = random_state

    def fit(self, X, y):
        rng = np.random.default_rng(self.random_state)
        rows = rng.permutation(len(X))[: self.max_rows]
        self.n_fit_rows_ = len(rows)
        self.scaler_ = StandardScaler().fit(X[rows])
        kernel = ConstantKernel() * RBF(np.ones(X.shape[1])) + WhiteKernel()
        self.model_ = GaussianProcessRegressor(
            kernel, normalize_y=True, random_state=self.random_state
        )
        with warnings.catch_warnings():
            # Length scales at their bounds (an irrelevant feature) warn.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_.fit(self.scaler_.transform(X[rows]), np.ravel(y)[rows])
        return self

    def score_samples(self, X, y):
        mean, std = self.model_.predict(self.scaler_.transform(X), return_std=True)
        return norm.logpdf(np.ravel(y), mean, std)


class ConditionalNSF:
    """zuko's conditional NSF trained by maximum likelihood with skflow's
    early stopping (``density_peers.fit_by_maximum_likelihood``); works on
    standardized X and y and returns log densities in y's units."""

    def __init__(
        self,
        max_steps,
        random_state=0,
        batch_size=512,
        learning_rate=1e-3,
        validation_fraction=0.1,
        n_iter_no_change=10,
    ):
        self.max_steps = max_steps
        self.random_state = random_state
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change

    def _tensors(self, X, y):
        Z = self.y_scaler_.transform(_as_2d(y))
        C = self.x_scaler_.transform(X)
        return (torch.as_tensor(A, dtype=torch.float32) for A in (Z, C))

    def fit(self, X, y):
        import zuko

        torch.manual_seed(self.random_state)
        Y = _as_2d(y)
        self.x_scaler_, self.y_scaler_ = (
            StandardScaler().fit(X),
            StandardScaler().fit(Y),
        )
        self.log_jacobian_ = -np.log(self.y_scaler_.scale_).sum()
        Z, C = self._tensors(X, Y)
        self.flow_, self.n_iter_ = fit_by_maximum_likelihood(
            lambda: zuko.flows.NSF(
                features=Z.shape[1],
                context=C.shape[1],
                transforms=3,
                hidden_features=(128, 128),
            ),
            lambda flow, rows: flow(C[rows]).log_prob(Z[rows]),
            len(Z),
            self.max_steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
        )
        return self

    def score_samples(self, X, y):
        Z, C = self._tensors(X, y)
        with torch.no_grad():
            log_q = self.flow_(C).log_prob(Z).double().numpy()
        return log_q + self.log_jacobian_


# -- the data ----------------------------------------------------------------


def heteroscedastic(n, rng):
    x = rng.uniform(-2, 2, n)
    mean, scale = np.sin(2 * x), 0.1 + 0.3 * np.abs(x)
    y = mean + scale * rng.normal(size=n)
    return x[:, None], y, norm.logpdf(y, mean, scale)


def bimodal(n, rng):
    x = rng.uniform(-2, 2, n)
    sign = rng.choice([-1.0, 1.0], n)
    y = sign * x + 0.1 * rng.normal(size=n)
    log_p = logsumexp(
        [norm.logpdf(y, x, 0.1), norm.logpdf(y, -x, 0.1)], axis=0
    ) + np.log(0.5)
    return x[:, None], y, log_p


def _banana_covariances(X):
    scales = np.array([0.5, 0.3])
    rho = 0.9 * np.tanh(X[:, 1])
    covariances = np.empty((len(X), 2, 2))
    covariances[:, 0, 0], covariances[:, 1, 1] = scales**2
    covariances[:, 0, 1] = covariances[:, 1, 0] = rho * scales.prod()
    return covariances


def banana(n, rng):
    """z ~ N(0, S(x)), correlation 0.9 tanh(x2); y1 = x1 + z1,
    y2 = x2 / 2 + z2 + (x1 / 2)(z1^2 - 1/4): a unit Jacobian from z to y."""
    X = rng.uniform(-2, 2, (n, 2))
    covariances = _banana_covariances(X)
    Z = np.einsum(
        "nij,nj->ni", np.linalg.cholesky(covariances), rng.normal(size=(n, 2))
    )
    bend = X[:, 0] / 2
    Y = np.column_stack(
        [X[:, 0] + Z[:, 0], X[:, 1] / 2 + Z[:, 1] + bend * (Z[:, 0] ** 2 - 0.25)]
    )
    # The truth: y back to z, then the Gaussian's log density row by row.
    z1 = Y[:, 0] - X[:, 0]
    z2 = Y[:, 1] - X[:, 1] / 2 - bend * (z1**2 - 0.25)
    Z_back = np.column_stack([z1, z2])
    precision = np.linalg.inv(covariances)
    quadratic = np.einsum("ni,nij,nj->n", Z_back, precision, Z_back)
    log_det = np.linalg.slogdet(covariances)[1]
    log_p = -0.5 * (quadratic + log_det) - np.log(2 * np.pi)
    return X, Y, log_p


KNOWN = {
    "heteroscedastic": heteroscedastic,
    "bimodal": bimodal,
    "banana (2-D y)": banana,
}


def load_engel():
    from statsmodels.datasets import engel

    data = engel.load_pandas().data
    return data[["income"]].to_numpy(float), data["foodexp"].to_numpy(float)


def load_randhie():
    from statsmodels.datasets import randhie

    data = randhie.load_pandas().data
    return data.drop(columns="mdvis").to_numpy(float), data["mdvis"].to_numpy(float)


# name: (loader, integer target to dequantize)
REAL = {
    "diabetes": (lambda: load_diabetes(return_X_y=True), False),
    "engel": (load_engel, False),
    "randhie (count, dequantized)": (load_randhie, True),
}


def known_split(name, seed, sizes):
    n_train, n_test, _ = sizes
    X, y, _ = KNOWN[name](n_train, np.random.default_rng(seed))
    X_test, y_test, log_p = KNOWN[name](n_test, np.random.default_rng(1000 + seed))
    return X, y, X_test, y_test, log_p


def real_split(name, seed, sizes):
    X, y = REAL[name][0]()
    n_train = min(sizes[0], int(0.8 * len(X)))
    n_test = min(sizes[1], len(X) - n_train)
    X, X_test, y, y_test = train_test_split(
        X, y, train_size=n_train, test_size=n_test, random_state=seed
    )
    return X, y, X_test, y_test, None


# -- the runs ----------------------------------------------------------------


def models(seed, n_targets, discrete, sizes, quick):
    """name: (factory of an unfitted model, whether it sees the fixed draw)."""
    skflow_params = {"max_iter": QUICK_STEPS} if quick else {}
    max_steps = QUICK_STEPS if quick else None  # None: skflow's auto, set later
    out = {
        SKFLOW: (
            lambda n: ConditionalFlowMatchingDensity(
                dequantize=discrete, random_state=seed, **skflow_params
            ),
            False,
        ),
    }
    if discrete:
        out[FIXED_DRAW] = (
            lambda n: ConditionalFlowMatchingDensity(
                random_state=seed, **skflow_params
            ),
            True,
        )
    out[GAUSSIAN] = (lambda n: LinearGaussian(), discrete)
    if n_targets == 1:
        out[GP] = (lambda n: GaussianProcessDensity(sizes[2], seed), discrete)
    out[NSF] = (
        lambda n: ConditionalNSF(max_steps or Recipe().max_iter(n), seed),
        discrete,
    )
    return out


def run_set(name, seed, sizes, quick):
    known = name in KNOWN
    discrete = False if known else REAL[name][1]
    split = (known_split if known else real_split)(name, seed, sizes)
    X, y, X_test, y_test, log_p = split
    fixed = None
    if discrete:
        # The peers cannot dequantize: one draw of U[0, 1) per row, once per
        # seed, for fitting and for scoring.
        rng = np.random.default_rng(seed)
        fixed = y + rng.uniform(size=y.shape), y_test + rng.uniform(size=y_test.shape)
    tags = {
        "dataset": name,
        "seed": seed,
        "n_train": len(X),
        "n_test": len(X_test),
        "n_features": X.shape[1],
        "n_targets": _as_2d(y).shape[1],
        "known": known,
        "dequantized": discrete,
    }
    runs = []
    if known:
        runs.append({**tags, "model": TRUTH, "loglik": float(np.mean(log_p))})
    for model_name, (factory, on_fixed) in models(
        seed, tags["n_targets"], discrete, sizes, quick
    ).items():
        model = factory(len(X))
        y_fit, y_score = fixed if on_fixed else (y, y_test)
        _, fit_seconds = timed(model.fit, X, y_fit)
        log_q, score_seconds = timed(model.score_samples, X_test, y_score)
        run = {
            **tags,
            "model": model_name,
            "loglik": float(np.mean(log_q)),
            "fit_seconds": fit_seconds,
            "score_seconds": score_seconds,
        }
        if hasattr(model, "n_iter_"):
            run["n_iter"] = int(model.n_iter_)
        if isinstance(model, ConditionalNSF):
            run["max_steps"] = model.max_steps
        if isinstance(model, GaussianProcessDensity):
            run["n_fit_rows"] = model.n_fit_rows_
        runs.append(run)
        print(
            f"  {model_name}: {run['loglik']:.4f} ({fit_seconds:.1f} s fit, "
            f"{score_seconds:.1f} s score)",
            flush=True,
        )
    return runs


# -- the report --------------------------------------------------------------


def _cells(runs):
    table = {}
    for run in runs:
        table.setdefault(run["dataset"], {}).setdefault(run["model"], []).append(run)
    return table


def _mean(cell, key):
    values = [run[key] for run in cell if key in run]
    return float(np.mean(values)) if values else None


def summarize(runs):
    summary = {}
    for dataset, table in _cells(runs).items():
        summary[dataset] = {}
        for model, cell in table.items():
            values = [run["loglik"] for run in cell]
            summary[dataset][model] = {
                "loglik": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "n_seeds": len(values),
                **{
                    key: _mean(cell, key)
                    for key in ("fit_seconds", "score_seconds", "n_iter")
                },
            }
    return summary


def same_steps(runs):
    """Per set: skflow's fit time against the NSF's for skflow's steps (the
    NSF's seconds per step, validation checks included, times skflow's
    n_iter_), seed by seed, then averaged."""
    out = {}
    for dataset, table in _cells(runs).items():
        pairs = zip(table[SKFLOW], table[NSF], strict=True)
        rows = []
        for skflow_run, nsf_run in pairs:
            nsf_per_step = nsf_run["fit_seconds"] / nsf_run["n_iter"]
            nsf_seconds = nsf_per_step * skflow_run["n_iter"]
            rows.append(
                {
                    "skflow_steps": skflow_run["n_iter"],
                    "skflow_fit_seconds": skflow_run["fit_seconds"],
                    "nsf_steps": nsf_run["n_iter"],
                    "nsf_max_steps": nsf_run["max_steps"],
                    "nsf_ms_per_step": 1000 * nsf_per_step,
                    "skflow_ms_per_step": 1000
                    * skflow_run["fit_seconds"]
                    / skflow_run["n_iter"],
                    "nsf_seconds_for_skflow_steps": nsf_seconds,
                    "ratio": skflow_run["fit_seconds"] / nsf_seconds,
                }
            )
        out[dataset] = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    return out


def _seconds(value):
    return "-" if value is None else f"{value:.1f}"


def markdown(results):
    summary, timing, seeds = results["summary"], results["same_steps"], results["seeds"]
    sets = results["sets"]
    lines = [
        "# Conditional density quality",
        "",
        f"{environment_line(results)} Test conditional log-likelihood "
        "log p(y | x), mean nats per test row in y's units (higher is "
        f"better): mean ± std over seeds {list(seeds)}; fit and score "
        "seconds: mean over seeds.",
        "",
        "## Data",
        "",
        "| data | features | targets | fit rows | test rows | known density "
        "| y dequantized |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in sets.items():
        lines.append(
            f"| {name} | {info['n_features']} | {info['n_targets']} | "
            f"{info['n_train']} | {info['n_test']} | "
            f"{'yes' if info['known'] else 'no'} | "
            f"{'yes' if info['dequantized'] else 'no'} |"
        )
    lines += [
        "",
        "## Test conditional log-likelihood (higher is better)",
        "",
        "| data | model | log-likelihood | fit (s) | score (s) |",
        "|---|---|---|---|---|",
    ]
    for dataset, table in summary.items():
        ranked = sorted(table.items(), key=lambda item: -item[1]["loglik"])
        for model, cell in ranked:
            lines.append(
                f"| {dataset} | {model} | {cell['loglik']:.3f} ± {cell['std']:.3f} "
                f"| {_seconds(cell['fit_seconds'])} "
                f"| {_seconds(cell['score_seconds'])} |"
            )
    lines += [
        "",
        "## Best model per set",
        "",
        "| data | best model | its log-likelihood | skflow | skflow - best | truth |",
        "|---|---|---|---|---|---|",
    ]
    best_counts = {}
    for dataset, table in summary.items():
        models_only = {m: c for m, c in table.items() if m != TRUTH}
        best, cell = max(models_only.items(), key=lambda item: item[1]["loglik"])
        best_counts[best] = best_counts.get(best, 0) + 1
        ours = table[SKFLOW]["loglik"]
        truth = f"{table[TRUTH]['loglik']:.3f}" if TRUTH in table else "-"
        lines.append(
            f"| {dataset} | {best} | {cell['loglik']:.3f} | {ours:.3f} | "
            f"{ours - cell['loglik']:+.3f} | {truth} |"
        )
    lines += [
        "",
        "## Fit time against the NSF for the same steps",
        "",
        "The NSF's seconds per step (its validation checks included) times "
        "the steps skflow took (`n_iter_`, early stopping included), against "
        "skflow's fit time (its checks, the final measure of "
        "`likelihood_error_` and, on at most 1,000 rows, its two trainings "
        "on every row (the mixture's members), which `n_iter_` does not "
        "count, included); the target "
        "is a ratio of 2 or less. "
        "Steps and seconds are means over seeds.",
        "",
        "| data | skflow steps | skflow fit (s) | skflow ms / step | NSF steps "
        "(of at most) | NSF ms / step | NSF s for skflow's steps "
        "| skflow / NSF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, row in timing.items():
        lines.append(
            f"| {dataset} | {row['skflow_steps']:.0f} | "
            f"{row['skflow_fit_seconds']:.1f} | {row['skflow_ms_per_step']:.1f} | "
            f"{row['nsf_steps']:.0f} ({row['nsf_max_steps']:.0f}) | "
            f"{row['nsf_ms_per_step']:.1f} | "
            f"{row['nsf_seconds_for_skflow_steps']:.1f} | {row['ratio']:.2f} |"
        )
    within = sum(row["ratio"] <= 2 for row in timing.values())
    n_sets = len(summary)
    wins = ", ".join(f"{model}: {count}" for model, count in best_counts.items())
    lines += [
        "",
        "## Notes",
        "",
        f"- Best model per set, counted over the {n_sets} sets: {wins}. skflow's "
        f"fit is within 2x of the NSF's for the same steps on {within} of "
        f"{len(timing)} sets.",
        "- skflow: `ConditionalFlowMatchingDensity(random_state=seed)`, "
        + (
            f"with `max_iter={QUICK_STEPS}` (`--quick`)."
            if results["quick"]
            else "defaults otherwise (4 x 256 MLP, `max_iter='auto'`, early "
            "stopping on 10% of the rows, then on at most 1,000 rows two "
            "trainings on every row up to the step kept, one from the initial "
            "weights and one from new ones, whose densities the model "
            "averages)."
        ),
        "- Gaussian: `LinearRegression` and the covariance of its training "
        "residuals (divided by n - features - 1; full for a 2-D y): one "
        "Gaussian whatever x.",
        f"- GP: fitted on at most {results['gp_max_rows']} training rows drawn "
        "at random (the cubic cost), on standardized X, one optimizer start; "
        "`std` of `predict(return_std=True)` includes the WhiteKernel's "
        "noise. Single targets only: no row on the 2-D set.",
        "- NSF: zuko's `NSF(features=n_targets, context=n_features, "
        "transforms=3, hidden_features=(128, 128))`, Adam (lr 1e-3, batch "
        "512), on standardized X and y (the log-Jacobian of y's "
        "standardization added); early stopping on 10% of the fit rows, "
        "checked as often as skflow checks and stopped after 10 checks "
        "without improvement, keeping the best weights; at most "
        + (
            f"{QUICK_STEPS} steps (`--quick`)."
            if results["quick"]
            else "as many steps as skflow's `max_iter='auto'` allows for the "
            "same rows (70 sqrt(n) clipped to [2000, 20000])."
        )
        + " `features=1` works as it is: each of its transforms is then a "
        "monotonic spline of y whose knots come from x.",
        "- randhie's target (doctor visits, a count) is dequantized: skflow "
        "fits the integers with `dequantize=True` (fresh U[0, 1) noise at "
        "each step) and scores y + u for its own seeded draw of u; the "
        "peers cannot, and fit and score y + u for one fixed draw per seed. "
        "skflow with defaults (`dequantize=False`) is also run on that "
        "fixed draw, for the like-for-like comparison. Each "
        "log-likelihood of y + u is a lower bound on log P(y | x) of the "
        "count. diabetes' target is whole numbers too "
        "(214 distinct values of 442) and is modelled as continuous by all.",
        "- No mixture-density or quantile peer: scikit-learn's quantile "
        "regressors (`QuantileRegressor`, `HistGradientBoostingRegressor("
        "loss='quantile')`) give quantiles, not a density, and neither "
        "scikit-learn nor zuko ships a mixture density network; turning "
        "quantiles into a density, or writing an MDN, would make the peer "
        "ours.",
        "- Known sets: x ~ U(-2, 2) (2-D for the banana), fit and test rows "
        "drawn with different seeds; the truth is the mean of the known "
        "log p(y | x) on the test rows. Real sets: a random split per seed.",
        f"- The whole run took {results['total_seconds'] / 60:.0f} min.",
    ]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke test")
    args = parser.parse_args()
    if args.quick:
        torch.set_num_threads(1)
    sizes = SIZES["quick" if args.quick else "full"]
    seeds = SEEDS[:1] if args.quick else SEEDS
    start = time.perf_counter()
    runs = []
    for name in (*KNOWN, *REAL):
        for seed in seeds:
            print(f"{name}, seed {seed}", flush=True)
            runs += run_set(name, seed, sizes, args.quick)
    results = environment(__spec__.name)
    if len(sys.argv) > 1:
        results["command"] += " " + " ".join(sys.argv[1:])
    info_keys = ("n_train", "n_test", "n_features", "n_targets", "known", "dequantized")
    results.update(
        {
            "quick": args.quick,
            "seeds": list(seeds),
            "skflow_params": {"max_iter": QUICK_STEPS} if args.quick else {},
            "gp_max_rows": sizes[2],
            "total_seconds": time.perf_counter() - start,
            "sets": {
                run["dataset"]: {key: run[key] for key in info_keys} for run in runs
            },
            "summary": summarize(runs),
            "same_steps": same_steps(runs),
            "runs": runs,
        }
    )
    name = "conditional_density_quick" if args.quick else "conditional_density"
    write_results(name, results, markdown(results))


if __name__ == "__main__":
    main()
