"""FlowMatchingDensity: a density estimator trained by flow matching."""

from __future__ import annotations

import contextlib
import copy
import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.utils import check_scalar
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)
from tqdm import tqdm

from ._device import (
    DTYPES,
    check_dtype_on_device,
    device_available,
    draw_seed,
    make_generator,
    resolve_device,
    standardized_tensor,
    to_numpy,
    to_tensor,
    training_data_device,
)
from ._training import train_vector_field
from .nets import VectorField
from .ode import (
    DIVERGENCES,
    MAX_EVALUATIONS,
    SOLVERS,
    SolveFailedError,
    SolveStats,
    check_solver,
    integrate,
    log_likelihood,
)
from .paths import PATHS, make_path

__all__ = ["FlowMatchingDensity"]

# "auto" inference chunks hold at most this many numbers in their largest
# tensor (rows x directions x width). On a CPU, 2^20 (4 MiB in float32) keeps
# a chunk's tensors in cache: measured 1.3x faster per row than 2^23. GPUs
# want large launches.
_CPU_CHUNK_ELEMENTS = 2**20
_ACCELERATOR_CHUNK_ELEMENTS = 2**25

# Random Fourier features of z (skflow.nets.FourierFeatures): this many,
# with frequencies of standard deviation 4 in 1 or 2 dimensions, falling as
# d^-1.5 above (0.36 at d = 10, 0.02 at d = 64). They cut the test KL from
# 0.33 to 0.10 on a checkerboard and from 0.50 to 0.05 on two spirals;
# twice this scale hurt, most in 10-D (benchmarks/results/recipe_ablation.md).
FOURIER_FEATURES = 128
FOURIER_SCALE_FACTOR = 1.0


# The hidden layers' activation: with 4 x 256, GELU cut the test KL on a
# checkerboard from 0.090 / 0.092 to 0.080 / 0.079 (seeds 0 / 1) and was
# within the seeds' noise of SiLU elsewhere; tanh was worse everywhere
# (benchmarks/results/recipe_ablation.md).
ACTIVATION = "gelu"


def _fourier_scale(n_features: int) -> float:
    return FOURIER_SCALE_FACTOR * 4.0 * min(1.0, 2.0 / n_features) ** 1.5


# max_iter="auto": this many steps per square root of the number of rows,
# within these bounds. 70 keeps the default fit of 10,000 rows x 2 under a
# minute on 2 CPU cores with the 4 x 256 network (35 to 47 s measured with
# 0.3.1's fused Adam step, 58 to 61 s with 0.3.0 on a slower day);
# 8,000 steps instead of 7,000 gained at most 0.004 nats of test KL in the
# recipe ablation.
_AUTO_STEPS_PER_SQRT_ROW = 70
_AUTO_STEPS = (2000, 20000)


def _standardize(
    X: np.ndarray,
    sample_weight: np.ndarray,
    dequantized: np.ndarray,
    block_rows: int = 2**16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations; 1 for constant columns.

    Returns the means, the scales and the mask of constant columns. Columns
    in the ``dequantized`` mask are standardized as X + U, U ~ U[0, 1): their
    mean moves by 1/2 and their variance grows by 1/12. Sums run over blocks
    of rows, so no temporary copy of X is ever made.
    """
    blocks = [
        slice(start, start + block_rows) for start in range(0, len(X), block_rows)
    ]
    total = sample_weight.sum()
    mean = sum(sample_weight[rows] @ X[rows] for rows in blocks) / total
    variance = (
        sum(sample_weight[rows] @ (X[rows] - mean) ** 2 for rows in blocks) / total
    )
    mean = mean + 0.5 * dequantized
    variance = variance + dequantized / 12.0
    scale = np.sqrt(variance)
    # As StandardScaler: a column constant up to round-off is left unscaled.
    constant = (scale < 10 * np.finfo(scale.dtype).eps * np.abs(mean)) | (scale == 0)
    scale[constant] = 1.0
    return mean, scale, constant


# Early stopping scores at most this many held-out rows, by this many rk4
# steps, with the exact divergence up to this many features and one fixed
# Hutchinson probe above: a check costs about 20 training steps in 2-D,
# 25 checks about 7% of a default fit. Checkpoints are compared on the same
# rows. 8 steps are biased by up to 0.007 nats in 2-D, more as the field
# sharpens (4 steps by 0.01 and more), and kept the checkpoint dopri5 would
# in 3 of 5 runs; the rows' noise (0.004 to 0.007 nats on 8 Gaussians)
# matters more (benchmarks/results/checkpoint_selection.md).
_VALIDATION_MAX_ROWS = 512
_VALIDATION_STEPS = 8
_VALIDATION_EXACT_UP_TO = 3
_VALIDATION_CHECKS = 25
# ... but at most one check per this many steps, so that short fits (a
# quick grid search's 400 steps, say) are not mostly checks: 25 checks took
# 1 to 2 times the training time of a 400-step 2 x 64 fit. max_iter="auto"
# never takes fewer than 2,000 steps, so its fits keep all 25 checks.
_VALIDATION_MIN_STEPS_BETWEEN = 80


def _integer_columns(X: np.ndarray) -> np.ndarray:
    """Mask of the columns whose every value is a whole number.

    From 2^52 on, float64 has no fractional bits left, so every value there
    is whole whatever the data mean: such a column is not taken as discrete.
    """
    return np.array(
        [
            np.array_equal(column, np.floor(column)) and np.all(np.abs(column) < 2**52)
            for column in X.T
        ]
    )


def _validation_every(max_iter: int) -> int:
    """Steps between two validation checks: about 25 checks per fit, fewer
    in fits shorter than 2,000 steps; the last step is always checked."""
    return max(_VALIDATION_MIN_STEPS_BETWEEN, max_iter // _VALIDATION_CHECKS)


def _validation_log_likelihood(z, weights, path, dequantize, generator):
    """``score(field)``: the weighted mean log density of the rows ``z``.

    Solved by a few fixed rk4 steps: cheap, and the same discretisation at
    every check, so the scores rank checkpoints even where they are biased.
    Dequantization noise and Hutchinson probes are drawn once, here.
    """
    n, d = z.shape
    if dequantize is not None:
        z = (
            z
            + torch.rand(z.shape, generator=generator, device=z.device).to(z.dtype)
            * dequantize
        )
    probes = None
    if d > _VALIDATION_EXACT_UP_TO:
        signs = torch.randint(0, 2, (n, 1, d), generator=generator, device=z.device)
        probes = (2 * signs - 1).to(z.dtype)
    weights = weights / weights.sum()

    def score(field) -> float:
        log_density, _ = log_likelihood(
            field,
            z,
            path.log_base_density,
            solver="rk4",
            n_steps=_VALIDATION_STEPS,
            probes=probes,
        )
        return float(weights.double() @ log_density)

    return score


# A row on which the adaptive solver gives up is scored by this many rk4
# steps: bounded time, and a number where there would be none.
_FALLBACK_STEPS = 64


def _solve_isolating_failures(solve, *, n_rows: int, solver: dict, start: int = 0):
    """Yield ``(rows, result, fell_back)`` from ``solve(rows, **solver)`` over n_rows.

    Adaptive solvers share their steps across rows, so one row whose solve
    fails (a state that overflows, a stiff trajectory) fails its whole
    chunk. A failed chunk is split in halves, down to the single rows that
    fail on their own, and only those are solved again by a fixed-step rk4:
    the other rows keep their adaptive, accurate solve.
    """
    rows = slice(start, start + n_rows)
    try:
        result = solve(rows, **solver)
    except SolveFailedError:
        result = None
    if result is not None:
        yield rows, *result, False
    elif n_rows == 1:
        fallback = {**solver, "solver": "rk4", "n_steps": _FALLBACK_STEPS}
        yield rows, *solve(rows, **fallback), True
    else:
        half = n_rows // 2
        yield from _solve_isolating_failures(
            solve, n_rows=half, solver=solver, start=start
        )
        yield from _solve_isolating_failures(
            solve, n_rows=n_rows - half, solver=solver, start=start + half
        )


@contextlib.contextmanager
def _restored_on_failure(estimator):
    """Undo every attribute change of a fit that raises, interrupts included.

    A refit that fails must leave a previously fitted model as it was, not
    half-replaced (``validate_data`` already resets ``n_features_in_``).
    """
    state = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(state)
        raise


class FlowMatchingDensity(DensityMixin, BaseEstimator):
    """Density estimation with a continuous normalizing flow trained by flow matching.

    A neural vector field v(t, z) is trained by flow matching (Lipman et al.,
    2023; Tong et al., 2024) to carry Gaussian noise at t = 0 to the
    standardized data at t = 1. Its log density is exact up to the ODE
    solver's tolerance, by the instantaneous change of variables: torchdiffeq
    solves each point's trajectory from the data back to the noise, and the
    exact divergence of the field, computed in closed form, is integrated
    along it by adaptive Gauss-Kronrod quadrature (with a fixed-step solver,
    the augmented ODE is integrated instead). Samples are drawn by
    integrating noise forwards.

    The data are standardized internally, ``z = (X - mean_) / scale_``, and
    every log density is returned in the caller's units: the Jacobian of the
    standardization, ``-sum(log(scale_))``, is included.

    Parameters
    ----------
    path : {"fm", "icfm", "ot-cfm", "vp"}, default="fm"
        The probability path joining noise and data:

        - ``"fm"``: Lipman et al.'s optimal-transport path; ``sigma`` is the
          width sigma_min of each conditional path at the data end.
        - ``"icfm"``: straight lines between independent noise and data
          points, blurred by Gaussian noise of standard deviation ``sigma``.
        - ``"ot-cfm"``: as ``"icfm"``, with noise and data re-paired inside
          each minibatch, in blocks of 128 rows, by exact optimal transport
          (straighter paths, slower training steps: about twice a plain
          one at the default batch size).
        - ``"vp"``: the trigonometric variance-preserving path, blurred by
          ``sigma`` like ``"icfm"``.

        The likelihood uses the path's own t = 0 marginal as base density:
        N(0, I) for ``"fm"``, N(0, (1 + sigma^2) I) for the others.

    sigma : float, default=0.01
        The path's noise level, in standardized units (see ``path``). It
        acts as a smoothing bandwidth: larger values give smoother densities.

    hidden_layer_sizes : array-like of int, default=(256, 256, 256, 256)
        Widths of the hidden layers of the vector field's MLP. Each hidden
        layer adds about d times its width squared to the cost of an exact
        divergence: narrower or shallower networks score faster in high
        dimensions but fit sharp densities less well.

    max_iter : int or "auto", default="auto"
        Largest number of optimizer steps (minibatches) of training; early
        stopping may take fewer. ``"auto"`` takes 70 sqrt(n_samples) steps,
        clipped to [2000, 20000]: 7,000 for 10,000 rows.

    batch_size : int, default=512
        Number of rows in each minibatch; rows are drawn with replacement,
        so this may exceed the number of samples.

    learning_rate : float, default=2e-3
        Peak learning rate of Adam, reached after a linear warm-up over the
        first 5% of the steps and then decayed to zero along a cosine.

    validation_fraction : float, default=0.1
        Fraction of the rows (at most 512 of them) held out of training
        to choose the weights by their log-likelihood: the averaged weights
        are scored about 25 times during training (every 80 steps and at
        the last one in fits shorter than 2,000 steps), by 8 rk4 steps
        (with one fixed Hutchinson probe above 3 features), and the best
        ones are kept. 0 trains on every row and keeps the last weights.

    n_iter_no_change : int or None, default=10
        Stop training when that many validation scores in a row have not
        improved on the best one. None disables the held-out split and
        early stopping altogether.

    dequantize : bool, default=True
        Treat the columns whose every training value is a whole number
        (counts, pixel intensities, ratings, codes) as discrete: training
        adds fresh uniform noise U[0, 1) to them at every step, so the model
        is a continuous density q of X + U and a column of integers cannot
        make it grow without bound (spikes on the integers, which also make
        early stopping and anomaly ranks erratic). :meth:`score_samples`
        then returns log q(x + u) for one seeded draw of u per row, an
        unbiased estimate of the variational lower bound
        E_u[log q(x + u)] <= log P(x) on the log probability of the discrete
        values (Theis et al., 2016), and :meth:`sample` rounds those columns
        down to whole numbers. Columns with any fractional value are never
        touched; False models every column as continuous.

    solver : {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", \
            "euler", "midpoint", "heun3", "rk4"}, default="dopri5"
        torchdiffeq method used by :meth:`score_samples` and :meth:`sample`.
        The first five choose their own steps from ``rtol`` and ``atol``; the
        others take ``n_steps`` equal steps.

    n_steps : int, default=None
        Number of steps of a fixed-step solver. Required by the fixed-step
        solvers (they would otherwise take a single step), ignored by the
        adaptive ones.

    rtol : float, default=1e-6
        Relative tolerance of an adaptive solver.

    atol : float, default=1e-6
        Absolute tolerance of an adaptive solver. With ``dopri5`` in float32,
        ``rtol = atol = 1e-6`` gave mean absolute errors of 2.8e-5 to
        1.2e-4 nats (2 to 64 features) against a float64 solve at 1e-9
        (``benchmarks/likelihood_engine.py``); 1e-5, tried while choosing
        the default, gave up to 1.5e-3.

    divergence : {"exact", "hutchinson"}, default="exact"
        How the divergence of the field is computed in the likelihood:
        exactly (in closed form, at the cost of about d + 1 passes of the
        network per evaluation), or by Hutchinson's unbiased estimator with
        ``n_probes`` Rademacher probes, fixed for the whole solve.
        Hutchinson's estimate is cheaper in high dimension but noisy: each
        log density carries a random error.

    n_probes : int, default=1
        Number of Hutchinson probes; ignored when ``divergence="exact"``.

    inference_batch_size : int or "auto", default="auto"
        Number of rows solved together by :meth:`score_samples` and
        :meth:`sample`; memory is bounded by one chunk's ODE state, however
        many rows are scored. ``"auto"`` bounds the largest tensor of a
        chunk (rows x directions x widest layer) to 2^20 numbers on the CPU,
        sized to stay in cache (256 rows at 16 features and width 256, exact
        divergence; 4,096 rows for sampling), and to 2^25 on accelerators.

    device : str or torch.device, default="auto"
        Where the network is trained and evaluated: ``"auto"`` picks CUDA,
        then MPS, then the CPU; or any torch device name (``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ``"mps"``). The resolved device is stored
        in ``device_``.

    dtype : {"float32", "float64"}, default="float32"
        Floating-point precision of the network and of the ODE solves.
        Outputs are float64 either way.

    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the minibatches, times and noise of
        training, and the Hutchinson probes. Pass an int for reproducible
        fits and scores (bitwise-identical on the CPU).

    verbose : int, default=0
        Progress reports: 1 shows a progress bar with the training loss
        during :meth:`fit`, and one over the chunks of :meth:`score_samples`
        and :meth:`sample` when there are several; 2 prints a line with the
        loss about ten times during :meth:`fit` instead of its bar; 0 is
        silent. Bars go to standard error, lines to standard output.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`. Defined only when `X`
        has feature names that are all strings.

    mean_ : ndarray of shape (``n_features_in_``,)
        (Weighted) mean of each feature, subtracted before the flow.

    scale_ : ndarray of shape (``n_features_in_``,)
        (Weighted) standard deviation of each feature, 1 for constant
        features; the flow sees ``(X - mean_) / scale_``.

    vector_field_ : torch.nn.Module
        The trained field (an exponential moving average of the training
        weights), in eval mode, on ``device_``. It is called as
        ``vector_field_(t, z)`` with torchdiffeq's convention: ``t`` a scalar
        tensor in [0, 1] (t = 0 noise, t = 1 data), ``z`` a tensor of shape
        ``(n, n_features_in_)`` of standardized inputs
        ``z = (X - mean_) / scale_``, in ``dtype`` on ``device_``; it returns
        dz/dt of the same shape. With ``path_.log_base_density`` this is
        everything another solver needs: ``log p(x) = log p_z(z) -
        sum(log(scale_))``.

    path_ : skflow.paths.ProbabilityPath
        The path the field was trained on; its ``log_base_density`` and
        ``sample_base`` are the t = 0 marginal.

    device_ : torch.device
        The device the field lives on.

    n_iter_ : int
        Number of optimizer steps taken: fewer than ``max_iter`` if early
        stopping ended training or the fit was interrupted.

    loss_curve_ : list of float
        Flow-matching loss of each optimizer step.

    validation_scores_ : list of float
        Mean log density (standardized units, rk4 estimate) of the held-out
        rows at each validation check; empty without a held-out split.

    integer_columns_ : ndarray of bool of shape (``n_features_in_``,)
        The columns treated as discrete: the whole-number columns of the
        training data if ``dequantize``, else none.

    solver_stats_ : dict
        Statistics of the last :meth:`score_samples` or :meth:`sample` call,
        to diagnose slow scoring: ``n_evaluations`` (evaluations of the
        field, summed over chunks), ``n_divergence_evaluations`` (those that
        also computed the divergence, each costing about d + 1 plain ones),
        ``max_evaluations_per_chunk`` and ``n_chunks`` (the number of
        solves: a chunk whose adaptive solve failed counts once per part it
        was split into).

    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture models.

    Notes
    -----
    :meth:`score` returns the *mean* log-likelihood, as
    :class:`~sklearn.mixture.GaussianMixture` does (KernelDensity returns
    the sum), so that ``GridSearchCV`` needs no ``scoring=``.

    Adaptive solvers (and the quadrature) share their steps (and panels)
    across the rows they integrate together, so a row's log density can
    change within the solver's tolerance with the other rows of the call;
    fixed-step solvers score each row independently of the others.

    References
    ----------
    Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative
    Modeling", ICLR 2023. Tong et al., "Improving and generalizing
    flow-based generative models with minibatch optimal transport",
    TMLR 2024. Grathwohl et al., "FFJORD", ICLR 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import FlowMatchingDensity
    >>> X = np.random.RandomState(0).normal(size=(200, 2))
    >>> est = FlowMatchingDensity(hidden_layer_sizes=(32, 32), max_iter=200,
    ...                           random_state=0).fit(X)
    >>> est.score_samples(X[:3]).shape
    (3,)
    >>> est.sample(5, random_state=0).shape
    (5, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        "path": [StrOptions(set(PATHS))],
        "sigma": [Interval(Real, 0, None, closed="left")],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
        "dequantize": ["boolean"],
        "solver": [StrOptions(set(SOLVERS))],
        "n_steps": [Interval(Integral, 1, None, closed="left"), None],
        "rtol": [Interval(Real, 0, None, closed="neither")],
        "atol": [Interval(Real, 0, None, closed="neither")],
        "divergence": [StrOptions(set(DIVERGENCES))],
        "n_probes": [Interval(Integral, 1, None, closed="left")],
        "inference_batch_size": [
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "device": [str, torch.device],
        "dtype": [StrOptions(set(DTYPES))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        path="fm",
        sigma=0.01,
        hidden_layer_sizes=(256, 256, 256, 256),
        max_iter="auto",
        batch_size=512,
        learning_rate=2e-3,
        validation_fraction=0.1,
        n_iter_no_change=10,
        dequantize=True,
        solver="dopri5",
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
        self.path = path
        self.sigma = sigma
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dequantize = dequantize
        self.solver = solver
        self.n_steps = n_steps
        self.rtol = rtol
        self.atol = atol
        self.divergence = divergence
        self.n_probes = n_probes
        self.inference_batch_size = inference_batch_size
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Train the vector field on X by flow matching.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, one row per sample.

        y : None
            Ignored. This parameter exists only for compatibility with
            :class:`~sklearn.pipeline.Pipeline`.

        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: minibatch rows are drawn with probability
            proportional to them, and the standardization is weighted.
            None gives every sample the same weight.

        Returns
        -------
        self : object
            The fitted estimator.

        Raises
        ------
        FloatingPointError
            If training diverges (the loss becomes NaN or infinite). No
            model is stored then, and a previously fitted one is kept.

        Notes
        -----
        Interrupting the fit (``KeyboardInterrupt``, Ctrl-C) after the first
        training step stops it with a warning and keeps the moving average
        of the weights so far: ``n_iter_`` says how many steps were taken.
        Any error leaves the estimator as it was before the call.
        """
        with _restored_on_failure(self):
            return self._fit(X, sample_weight)

    def _fit(self, X, sample_weight):
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True
        )
        hidden_layer_sizes = self._check_hidden_layer_sizes()
        device = resolve_device(self.device)
        dtype = DTYPES[self.dtype]
        check_dtype_on_device(dtype, device)
        check_solver(self.solver, self.n_steps)

        X = X.astype(np.float64, copy=False)
        integer_columns = np.zeros(X.shape[1], dtype=bool)
        if self.dequantize:
            integer_columns = _integer_columns(X)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, scale, constant = _standardize(X, sample_weight, integer_columns)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
            raise ValueError(
                "X has values too large to standardize: a column's mean or "
                "variance overflows float64. Rescale X (e.g. divide it by "
                "its largest absolute value)."
            )
        if constant.any():
            warnings.warn(
                f"Feature(s) {np.flatnonzero(constant).tolist()} are constant "
                "in X: the model puts a spike of width about sigma "
                f"({self.sigma:g}, in their units) there, so log densities "
                "are large and depend on sigma. Drop constant features that "
                "carry no information.",
                UserWarning,
                stacklevel=4,  # _fit, fit, sklearn's _fit_context, caller
            )
        n_bytes = X.size * torch.finfo(dtype).bits // 8
        data_device = training_data_device(n_bytes, device)
        data = standardized_tensor(X, mean, scale, data_device, dtype)
        weights = to_tensor(sample_weight, device, dtype)

        rng = np.random.RandomState(draw_seed(self.random_state))
        init_seed, train_seed, probe_seed = (draw_seed(rng) for _ in range(3))
        path = make_path(self.path, self.sigma)
        dequantize = None
        if integer_columns.any():
            dequantize = to_tensor(integer_columns / scale, device, dtype)
        max_iter = self._max_iter(len(X))
        # Held-out rows get weight 0: the sampler never draws them, and the
        # training tensor needs no copy without them.
        validation_rows = self._validation_rows(sample_weight, rng)
        validation_score = None
        if validation_rows is not None:
            validation_score = _validation_log_likelihood(
                data[torch.as_tensor(validation_rows, device=data.device)].to(device),
                weights[validation_rows],
                path,
                dequantize,
                make_generator(draw_seed(rng), device),
            )
            weights[validation_rows] = 0
        # Initial weights come from a forked global RNG on the CPU, so the
        # same seed gives the same network on every device.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            field = VectorField(
                X.shape[1],
                hidden_layer_sizes,
                n_fourier_features=FOURIER_FEATURES,
                fourier_scale=_fourier_scale(X.shape[1]),
                activation=ACTIVATION,
            )
        field = field.to(device=device, dtype=dtype)

        field, loss_curve, validation_scores = train_vector_field(
            field,
            path,
            data,
            weights,
            max_iter=max_iter,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            generator=make_generator(train_seed, device),
            dequantize=dequantize,
            validation_score=validation_score,
            validation_every=_validation_every(max_iter),
            n_iter_no_change=self.n_iter_no_change,
            verbose=self.verbose,
        )

        self.mean_ = mean
        self.scale_ = scale
        self.path_ = path
        self.vector_field_ = field
        self.device_ = device
        self.n_iter_ = len(loss_curve)
        self.loss_curve_ = loss_curve
        self.validation_scores_ = validation_scores
        self.integer_columns_ = integer_columns
        self._probe_seed = probe_seed
        return self

    def score_samples(self, X):
        """Compute the log density of each sample under the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            Log density of each row of X, in the units of X (float64).
            Higher means more typical of the training data.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._log_density(X)

    def _log_density(self, X: np.ndarray) -> np.ndarray:
        """score_samples on an already validated X."""
        check_solver(self.solver, self.n_steps)
        dtype = self._field_dtype()
        hutchinson = self.divergence == "hutchinson"
        n_directions = self.n_probes if hutchinson else self.n_features_in_
        if hutchinson:
            # Probes are drawn on the CPU, chunk after chunk from one seeded
            # stream: each row gets the same probes whatever the chunking.
            probe_generator = make_generator(self._probe_seed, torch.device("cpu"))
        # Dequantization noise: one seeded stream, chunk after chunk, so
        # each row's draw does not depend on the chunking either.
        noise = np.random.default_rng(self._probe_seed)
        integer_columns = getattr(self, "integer_columns_", None)
        log_density = np.empty(X.shape[0])
        evaluations = []
        n_fallbacks = 0
        for rows in self._chunks(X.shape[0], n_directions, task="score_samples"):
            X_rows = X[rows]
            if integer_columns is not None and integer_columns.any():
                X_rows = X_rows + integer_columns * noise.random(X_rows.shape)
            z = to_tensor((X_rows - self.mean_) / self.scale_, self.device_, dtype)
            probes = None
            if hutchinson:
                shape = (z.shape[0], self.n_probes, z.shape[1])
                signs = torch.randint(0, 2, shape, generator=probe_generator)
                probes = (2 * signs - 1).to(self.device_, dtype)
            log_density[rows], chunk_stats, chunk_fallbacks = self._score_chunk(
                z, probes
            )
            evaluations += chunk_stats
            n_fallbacks += chunk_fallbacks
        self._record_solver_stats(evaluations)
        if n_fallbacks:
            warnings.warn(
                f"The {self.solver} solver gave up on {n_fallbacks} row(s) "
                f"after {MAX_EVALUATIONS} field evaluations or a step-size "
                f"underflow; they were scored with {_FALLBACK_STEPS} fixed rk4 "
                "steps instead and may be inaccurate (the other rows were not "
                "affected).",
                RuntimeWarning,
                stacklevel=3,  # _log_density, score_samples, caller
            )
        not_finite = ~np.isfinite(log_density)
        if not_finite.any():
            warnings.warn(
                f"{not_finite.sum()} row(s) have a log density beyond the range "
                f"of {self._field_dtype()}: their trajectories overflowed, so "
                "they are reported as -inf (density 0). dtype='float64' "
                "reaches further.",
                RuntimeWarning,
                stacklevel=3,
            )
            log_density[not_finite] = -np.inf
        return log_density - np.sum(np.log(self.scale_))

    def score(self, X, y=None):
        """Compute the mean log-likelihood of X under the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        y : None
            Ignored. This parameter exists only for compatibility with
            :class:`~sklearn.pipeline.Pipeline`.

        Returns
        -------
        log_likelihood : float
            Mean log density of the rows of X (as GaussianMixture.score).
        """
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1, random_state=None):
        """Generate random samples from the model.

        Noise from the path's t = 0 marginal is integrated to t = 1 along
        the vector field, then the standardization is undone.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples to generate.

        random_state : int, RandomState instance or None, default=None
            Seeds the noise. Pass an int for reproducible samples.

        Returns
        -------
        X : ndarray of shape (n_samples, ``n_features_in_``)
            Generated samples (float64).
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", target_type=Integral, min_val=1)
        check_solver(self.solver, self.n_steps)
        dtype = self._field_dtype()
        # The noise is drawn on the CPU, so one seed gives the same noise on
        # every device and for every chunking.
        noise = self.path_.sample_base(
            n_samples,
            self.n_features_in_,
            generator=make_generator(draw_seed(random_state), torch.device("cpu")),
            device=torch.device("cpu"),
            dtype=torch.float32,
        )
        samples = np.empty((n_samples, self.n_features_in_))
        evaluations = []
        for rows in self._chunks(n_samples, n_directions=1, task="sample"):
            z, stats = integrate(
                self.vector_field_,
                noise[rows].to(self.device_, dtype),
                **self._solver_options(),
            )
            samples[rows] = to_numpy(z)
            evaluations.append(stats)
        self._record_solver_stats(evaluations)
        samples = samples * self.scale_ + self.mean_
        integer_columns = getattr(self, "integer_columns_", None)
        if integer_columns is not None and integer_columns.any():
            # The discrete model: P(k) is the mass of [k, k + 1).
            samples[:, integer_columns] = np.floor(samples[:, integer_columns])
        return samples

    def _score_chunk(self, z: torch.Tensor, probes: torch.Tensor | None):
        """Log densities of the standardized rows ``z``, isolating failed solves.

        Returns the log densities (float64 numpy), the stats of each solve,
        and the number of rows that fell back to fixed steps.
        """

        def solve(part, **solver):
            return log_likelihood(
                self.vector_field_,
                z[part],
                self.path_.log_base_density,
                probes=None if probes is None else probes[part],
                **solver,
            )

        log_density = np.empty(z.shape[0])
        stats, n_fallbacks = [], 0
        for part, part_log_density, part_stats, fell_back in _solve_isolating_failures(
            solve, n_rows=z.shape[0], solver=self._solver_options()
        ):
            log_density[part] = to_numpy(part_log_density)
            stats.append(part_stats)
            n_fallbacks += fell_back
        return log_density, stats, n_fallbacks

    def _solver_options(self) -> dict:
        return {
            "solver": self.solver,
            "n_steps": self.n_steps,
            "rtol": self.rtol,
            "atol": self.atol,
        }

    def _chunks(self, n_rows: int, n_directions: int, task: str):
        """Slices of at most `inference_batch_size` rows covering n_rows.

        With ``verbose >= 1`` and more than one chunk, iterating them shows a
        progress bar named ``task``.
        """
        size = self.inference_batch_size
        if size == "auto":
            # Bound the largest tensor of a solve, (rows, directions, width).
            width = max(self.vector_field_.hidden_layer_sizes)
            budget = (
                _CPU_CHUNK_ELEMENTS
                if self.device_.type == "cpu"
                else _ACCELERATOR_CHUNK_ELEMENTS
            )
            size = max(64, budget // (width * max(1, n_directions)))
        chunks = [
            slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)
        ]
        return tqdm(
            chunks, desc=task, unit="chunk", disable=self.verbose < 1 or len(chunks) < 2
        )

    def _record_solver_stats(self, chunks: list[SolveStats]) -> None:
        self.solver_stats_ = {
            "n_evaluations": sum(chunk.n_evaluations for chunk in chunks),
            "n_divergence_evaluations": sum(
                chunk.n_divergence_evaluations for chunk in chunks
            ),
            "max_evaluations_per_chunk": max(chunk.n_evaluations for chunk in chunks),
            "n_chunks": len(chunks),
        }

    def _max_iter(self, n_samples: int) -> int:
        if self.max_iter != "auto":
            return self.max_iter
        return int(np.clip(_AUTO_STEPS_PER_SQRT_ROW * np.sqrt(n_samples), *_AUTO_STEPS))

    def _validation_rows(self, sample_weight, rng) -> np.ndarray | None:
        """Rows held out for early stopping, or None when there are none.

        None when ``n_iter_no_change`` is None, when the fraction rounds
        to no row, or when either side would be left without weight.
        """
        n_samples = len(sample_weight)
        n_valid = min(round(self.validation_fraction * n_samples), _VALIDATION_MAX_ROWS)
        if self.n_iter_no_change is None or n_valid < 1 or n_valid >= n_samples:
            return None
        rows = rng.permutation(n_samples)[:n_valid]
        held_out = sample_weight[rows].sum()
        if held_out <= 0 or held_out >= sample_weight.sum():
            return None
        return rows

    def _check_hidden_layer_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, Integral) else tuple(sizes)
        if not sizes or any(
            not isinstance(size, Integral) or size < 1 for size in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a positive int or a non-empty "
                f"sequence of positive ints, got {self.hidden_layer_sizes!r}."
            )
        return tuple(int(size) for size in sizes)

    def _field_dtype(self) -> torch.dtype:
        # The dtype the field was trained in, whatever `dtype` says now.
        return next(self.vector_field_.parameters()).dtype

    def __getstate__(self):
        # Store the field on the CPU, so a model fitted on a GPU unpickles
        # on a machine without one.
        state = dict(super().__getstate__())
        if "vector_field_" in state:
            state["vector_field_"] = copy.deepcopy(state["vector_field_"]).to("cpu")
        return state

    def __setstate__(self, state):
        if "vector_field_" in state:
            device = state["device_"]
            if not device_available(device):
                warnings.warn(
                    f"This model was fitted on {device}, which is not available "
                    "here; it is loaded on the CPU.",
                    UserWarning,
                    stacklevel=2,
                )
                device = torch.device("cpu")
            state["vector_field_"] = state["vector_field_"].to(device)
            state["device_"] = device
        super().__setstate__(state)
