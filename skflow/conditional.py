"""ConditionalFlowMatchingDensity: p(y | X) by conditional flow matching."""

from __future__ import annotations

from numbers import Integral
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import check_scalar
from sklearn.utils._tags import RegressorTags
from sklearn.utils.validation import check_is_fitted, validate_data

from ._device import (
    DTYPES,
    check_dtype_on_device,
    draw_seed,
    make_generator,
    resolve_device,
    standardized_tensor,
    to_tensor,
    training_data_device,
)
from ._docstrings import numpydoc_section, replace_entry
from ._flow_estimator import FlowEstimator, restored_on_failure
from ._inference import log_densities, samples
from ._likelihood_error import likelihood_error, rows_to_measure
from ._nets import ConditionalVectorField, log_mean_density, members_of
from ._ode import check_solver
from ._paths import make_path
from ._preprocessing import (
    check_sample_weight,
    dequantized,
    fit_standardization,
    log_jacobian,
    standardize,
    to_data_units,
)
from .density import FlowMatchingDensity

__all__ = ["ConditionalFlowMatchingDensity"]

_DEQUANTIZE = """\
    dequantize : bool, default=False
        Treat the columns of y whose every training value is a whole number
        as discrete: the model is then a density of y + U, U ~ U[0, 1), and
        :meth:`score_samples` returns log q(y + u | x) for one draw of u
        per row, drawn from the row's values (see
        :class:`FlowMatchingDensity`). False, the
        default, models y as continuous: integer targets are common in
        regression data, and a dequantized y would change what ``score``
        measures. X is never dequantized.
"""


class ConditionalFlowMatchingDensity(FlowEstimator):
    # The docstring is assembled below from FlowMatchingDensity's, so the
    # shared parameters are documented once.

    _network: ClassVar[type[ConditionalVectorField]] = ConditionalVectorField
    # On small data, training again on every row after early stopping
    # raised the test log-likelihood on the sets kept for choosing and was
    # confirmed on diabetes and engel (benchmarks/results/refit_small_data.md,
    # which says why the bound is 1,000 rows).
    _refit_max_rows: ClassVar[int] = 1_000
    # The refit trains a second field from new initial weights, and the
    # model is the mixture of the two densities: chosen on the small sets
    # kept for choosing, confirmed on diabetes and engel
    # (benchmarks/results/refit_members.md, which says why 2, not 3).
    _refit_members: ClassVar[int] = 2

    def __init__(
        self,
        *,
        path="fm",
        sigma=0.01,
        hidden_layer_sizes="auto",
        max_iter="auto",
        likelihood_max_iter=0,
        batch_size=512,
        learning_rate=2e-3,
        validation_fraction=0.1,
        n_iter_no_change=10,
        dequantize=False,
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
        self.path = path
        self.sigma = sigma
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.likelihood_max_iter = likelihood_max_iter
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        # score is the mean conditional log-likelihood, not R^2.
        tags.regressor_tags = RegressorTags(poor_score=True)
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the conditional vector field on the pairs (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The conditions.

        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            The targets, whose density given X is modelled.

        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: minibatch rows are drawn with probability
            proportional to them, and the standardizations are weighted.

        Returns
        -------
        self : object
            The fitted estimator.

        Raises
        ------
        FloatingPointError
            If training diverges (see :meth:`FlowMatchingDensity.fit`). No
            model is stored then, and a previously fitted one is kept.
        """
        with restored_on_failure(self):
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        X, Y, y_ndim = self._validate_pairs(X, y, reset=True)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        sample_weight = sample_weight / sample_weight.max()
        hidden_layer_sizes = self._check_hidden_layer_sizes(Y.shape[1])
        device = resolve_device(self.device)
        dtype = DTYPES[self.dtype]
        check_dtype_on_device(dtype, device)
        check_solver(self.solver, self.n_steps)

        y_mean, y_scale, discrete = fit_standardization(
            Y, sample_weight, dequantize=self.dequantize, sigma=self.sigma, name="y"
        )
        X_mean, X_scale = _condition_scaling(X, sample_weight)
        n_targets = Y.shape[1]
        rows = np.hstack([Y, X])
        n_bytes = rows.size * torch.finfo(dtype).bits // 8
        data = standardized_tensor(
            rows,
            np.concatenate([y_mean, X_mean]),
            np.concatenate([y_scale, X_scale]),
            training_data_device(n_bytes, device),
            dtype,
        )
        dequantize = None
        if discrete.any():
            widths = np.concatenate([discrete / y_scale, np.zeros(X.shape[1])])
            dequantize = to_tensor(widths, device, dtype)
        rng = np.random.RandomState(draw_seed(self.random_state))
        init_seed, train_seed, probe_seed = (draw_seed(rng) for _ in range(3))
        path = make_path(self.path, self.sigma)

        def new_field(seed):
            return self._build_field(
                n_targets, X.shape[1], hidden_layer_sizes, seed
            ).to(device=device, dtype=dtype)

        field = new_field(init_seed)
        field, loss_curve, validation_scores, held_out = self._train(
            field,
            path,
            data,
            to_tensor(sample_weight, device, dtype),
            sample_weight,
            dequantize,
            rng,
            make_generator(train_seed, device),
            n_targets,
            new_field,
        )
        self.y_mean_, self.y_scale_, self.integer_targets_ = y_mean, y_scale, discrete
        self.X_mean_, self.X_scale_ = X_mean, X_scale
        self.n_targets_, self._y_ndim = n_targets, y_ndim
        self.path_, self.vector_field_, self.device_ = path, field, device
        self.n_iter_ = len(loss_curve)
        self.loss_curve_ = loss_curve
        self.validation_scores_ = validation_scores
        self._probe_seed = probe_seed
        self.likelihood_error_ = self._measure_likelihood_error(
            held_out, data, draw_seed(rng)
        )
        return self

    def _build_field(
        self, n_targets, n_conditions, hidden_layer_sizes, seed
    ) -> ConditionalVectorField:
        """A new ``_network`` on the CPU in float32, from a forked global RNG
        (the same seed gives the same network on every device)."""
        recipe = self._recipe
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._network(
                n_targets,
                n_conditions,
                hidden_layer_sizes,
                recipe.condition_layer_sizes,
                recipe.n_time_frequencies,
                n_fourier_features=recipe.n_fourier_features,
                fourier_scale=recipe.fourier_scale(n_targets),
                activation=recipe.activation,
            )

    def _measure_likelihood_error(self, held_out, data, seed) -> dict:
        """``likelihood_error_``: the solver's error on held-out pairs, or
        where none are held out, on the model's own samples given the
        conditions of a few training rows."""
        n_rows = rows_to_measure(self.n_targets_)
        if held_out is not None:
            state = held_out.z[:n_rows]
        else:
            rows = torch.randperm(
                len(data), generator=make_generator(seed, torch.device("cpu"))
            )[:n_rows]
            conditions = data[rows.to(data.device), self.n_targets_ :].double().cpu()
            state = self._push(
                self._noise(len(rows), seed), conditions, 0, self.vector_field_
            )
            state = to_tensor(state, self.device_, data.dtype)
        return likelihood_error(
            self.vector_field_, state, self._log_base_density, self._solver_options()
        )

    def _log_base_density(self, state: torch.Tensor) -> torch.Tensor:
        """The path's base density of the targets of rows ``[y, x]``."""
        return self.path_.log_base_density(state[:, : self.n_targets_])

    def score_samples(self, X, y):
        """Compute the conditional log density of each pair (x_i, y_i).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The conditions.

        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            The targets.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            log p(y_i | x_i), in the units of y (float64).
        """
        check_is_fitted(self)
        X, Y, _ = self._validate_pairs(X, y, reset=False)
        return self._log_density(X, Y)

    def score(self, X, y, sample_weight=None):
        """Mean conditional log-likelihood of y given X under the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The conditions.

        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            The targets.

        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the pairs in the mean.

        Returns
        -------
        log_likelihood : float
            The (weighted) mean of :meth:`score_samples`: higher is better,
            so ``GridSearchCV`` and ``cross_val_score`` need no
            ``scoring=``. It is not R^2.
        """
        log_density = self.score_samples(X, y)
        weights = check_sample_weight(sample_weight, len(log_density))
        return float(np.average(log_density, weights=weights))

    def sample(self, X, n_samples=1, random_state=None):
        """Draw targets from the model's density of y given each row of X.

        Parameters
        ----------
        X : array-like of shape (n_conditions, n_features)
            The conditions.

        n_samples : int, default=1
            Number of draws per row of X.

        random_state : int, RandomState instance or None, default=None
            Seeds the noise. Pass an int for reproducible samples.

        Returns
        -------
        y : ndarray of shape (n_conditions, n_samples) or \
                (n_conditions, n_samples, n_targets)
            The draws (float64): the first shape if ``fit`` was given a 1-D
            y, the second otherwise.
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", target_type=Integral, min_val=1)
        X = self._validate_conditions(X)
        return self._sample(X, n_samples, draw_seed(random_state))

    def predict(self, X, n_samples=100):
        """Estimate the conditional mean E[y | x] of each row of X.

        The mean of ``n_samples`` draws of the model given each row, in
        antithetic pairs (noise and its negative). The noise comes from a
        seed kept by the fitted model and is the same for every row, so a
        row's prediction depends neither on the call nor on the other rows.
        Its Monte Carlo error shrinks as 1 / sqrt(n_samples) and, the noise
        being fixed, is the same at every call: pass a larger
        ``n_samples`` for a more precise mean (each draw is one ODE solve,
        one per member where the model is a mixture: the mean of the
        members' means).

        Parameters
        ----------
        X : array-like of shape (n_conditions, n_features)
            The conditions.

        n_samples : int, default=100
            Draws per row (rounded up to an even number).

        Returns
        -------
        y_mean : ndarray of shape (n_conditions,) or (n_conditions, n_targets)
            The estimated conditional means (float64), shaped as ``fit``'s y.
        """
        check_is_fitted(self)
        check_scalar(n_samples, "n_samples", target_type=Integral, min_val=1)
        X = self._validate_conditions(X)
        noise = self._noise(-(-n_samples // 2), self._probe_seed)
        noise = torch.stack([noise, -noise], dim=1).reshape(-1, self.n_targets_)
        noise = noise.repeat(len(X), 1)
        # A mixture's mean is the mean of its members' means.
        members = members_of(self.vector_field_)
        return np.mean(
            [
                self._draw(X, noise, np.full(len(noise), k)).mean(axis=1)
                for k in range(len(members))
            ],
            axis=0,
        )

    def _sample(self, X, n_samples, seed):
        noise = self._noise(len(X) * n_samples, seed)
        # Each draw comes from a member drawn uniformly (one member: all 0).
        n_members = len(members_of(self.vector_field_))
        member_of_row = np.random.RandomState(seed).randint(n_members, size=len(noise))
        return self._draw(X, noise, member_of_row)

    def _noise(self, n_rows: int, seed: int) -> torch.Tensor:
        """Draws of the base density for the targets, on the CPU in float32
        (one seed, the same draws on every device and dtype), as float64."""
        return self.path_.sample_base(
            n_rows,
            self.n_targets_,
            generator=make_generator(seed, torch.device("cpu")),
            device=torch.device("cpu"),
            dtype=torch.float32,
        ).double()

    def _draw(self, X: np.ndarray, noise: torch.Tensor, member_of_row) -> np.ndarray:
        """``noise`` (rows of X's draws one after the other) pushed to t = 1
        beside each row's condition, row i by the field's member
        ``member_of_row[i]``, in y's units, shaped as ``sample``'s."""
        check_solver(self.solver, self.n_steps)
        per_row = len(noise) // len(X)
        conditions = torch.from_numpy((X - self.X_mean_) / self.X_scale_)
        conditions = conditions.repeat_interleave(per_row, dim=0)
        Z = np.empty((len(noise), noise.shape[1] + conditions.shape[1]))
        for k, field in enumerate(members_of(self.vector_field_)):
            rows = np.flatnonzero(member_of_row == k)
            if len(rows):
                Z[rows] = self._push(noise[rows], conditions[rows], self.verbose, field)
        Y = to_data_units(
            Z[:, : self.n_targets_], self.y_mean_, self.y_scale_, self.integer_targets_
        )
        if self._y_ndim == 1:
            return Y.reshape(len(X), per_row)
        return Y.reshape(len(X), per_row, self.n_targets_)

    def _push(self, noise, conditions, verbose, field) -> np.ndarray:
        """Rows ``[noise, condition]`` (standardized, on the CPU) pushed from
        t = 0 to t = 1 by ``field``: rows ``[y, x]``, float64."""
        # Cast on the CPU: MPS holds no float64.
        dtype = next(field.parameters()).dtype
        return samples(
            field,
            torch.cat([noise, conditions], dim=1).to(dtype),
            solver=self._solver_options(),
            rows_per_chunk=self._rows_per_chunk(n_directions=1),
            verbose=verbose,
        )

    def _log_density(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """score_samples on already validated X and y (2-D)."""
        check_solver(self.solver, self.n_steps)
        hutchinson = self.divergence == "hutchinson"
        k = self.n_targets_

        def standardize_rows(rows):
            y = dequantized(rows[:, :k], self.integer_targets_, self._probe_seed, rows)
            return np.hstack(
                [
                    (y - self.y_mean_) / self.y_scale_,
                    (rows[:, k:] - self.X_mean_) / self.X_scale_,
                ]
            )

        rows_per_chunk = self._rows_per_chunk(
            self.n_probes if hutchinson else self.vector_field_.divergence_directions
        )
        log_density = log_mean_density(
            [
                log_densities(
                    field,
                    self._log_base_density,
                    np.hstack([Y, X]),
                    standardize=standardize_rows,
                    n_probes=self.n_probes if hutchinson else None,
                    probe_seed=self._probe_seed,
                    solver=self._solver_options(),
                    rows_per_chunk=rows_per_chunk,
                    verbose=self.verbose,
                )
                for field in members_of(self.vector_field_)
            ]
        )
        return log_density + log_jacobian(self.y_scale_)

    def _validate_conditions(self, X) -> np.ndarray:
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return X.astype(np.float64, copy=False)

    def _validate_pairs(self, X, y, *, reset) -> tuple[np.ndarray, np.ndarray, int]:
        """X and y as float64, y as a 2-D array, and the ndim of the y given;
        ``reset``: at fit time (else y must have the fitted targets)."""
        X, y = validate_data(
            self,
            X,
            y,
            dtype=[np.float64, np.float32],
            multi_output=True,
            y_numeric=True,
            ensure_min_samples=2 if reset else 1,
            reset=reset,
        )
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if not reset and Y.shape[1] != self.n_targets_:
            raise ValueError(
                f"y has {Y.shape[1]} target(s), but {type(self).__name__} was "
                f"fitted with {self.n_targets_}."
            )
        return X.astype(np.float64, copy=False), Y, np.ndim(y)


def _condition_scaling(X, sample_weight) -> tuple[np.ndarray, np.ndarray]:
    """The conditions' (weighted) means and scales, 1 for constant columns."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, scale, _ = standardize(X, sample_weight, np.zeros(X.shape[1]))
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
        raise ValueError(
            "X has values too large to standardize: a column's mean or "
            "variance overflows float64. Rescale X (e.g. divide it by its "
            "largest absolute value)."
        )
    return mean, scale


_HIDDEN_LAYER_SIZES = """\
    hidden_layer_sizes : array-like of int or "auto", default="auto"
        Widths of the hidden layers of the field's MLP (``"auto"``: four
        layers of 256). Narrower or shallower networks score faster but fit
        sharp densities less well.
"""
_PARAMETERS = numpydoc_section(FlowMatchingDensity.__doc__, "Parameters")
# The HollowNet field is unconditional only, for now.
_PARAMETERS = replace_entry(_PARAMETERS, "architecture", None)
_PARAMETERS = replace_entry(_PARAMETERS, "hidden_layer_sizes", _HIDDEN_LAYER_SIZES)
_VALIDATION_FRACTION = """\
    validation_fraction : float, default=0.1
        Fraction of the pairs (at most 512) held out to choose the weights by
        their conditional log-likelihood, checked 25 times during training
        (every 80 steps in shorter fits). With at most 1,000 pairs, two
        fields then train on every pair, held-out ones included, with the
        same schedule, up to the step of the best check: one from the
        initial weights, one from new ones. The model is the mixture of
        their two densities (the mean of the two), so scoring and sampling
        cost two solves where one field costs one (one field only with
        ``likelihood_max_iter > 0``: fine-tuning trains one). With more
        pairs, the best weights checked are kept. 0 trains on every pair
        and keeps the last weights.
"""
_PARAMETERS = replace_entry(_PARAMETERS, "dequantize", _DEQUANTIZE)
_PARAMETERS = replace_entry(_PARAMETERS, "validation_fraction", _VALIDATION_FRACTION)
_SUMMARY = "Conditional density p(y | X) by flow matching."
ConditionalFlowMatchingDensity.__doc__ = f"""{_SUMMARY}

    A probabilistic regressor whose prediction is a whole density: the
    vector field moves the targets y from Gaussian noise (t = 0) to the data
    (t = 1) and sees the condition x through a learned embedding (an MLP of
    the standardized x), as in flow matching for simulation-based inference
    (Dax et al., 2023). The log density of y given x is exact up to the ODE
    solver's tolerance, by the instantaneous change of variables in y.

    X and y are standardized separately, ``(y - y_mean_) / y_scale_`` and
    ``(X - X_mean_) / X_scale_``; every log density is returned in y's units
    (the Jacobian ``-sum(log(y_scale_))`` is included; X's scaling does not
    enter a density of y).

    Parameters
    ----------
{_PARAMETERS}
    Attributes
    ----------
    n_features_in_ : int
        Number of features of X seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`. Defined only when `X`
        has feature names that are all strings.

    n_targets_ : int
        Number of columns of y.

    y_mean_, y_scale_ : ndarray of shape (``n_targets_``,)
        The targets' (weighted) means and standard deviations (1 for a
        constant column).

    X_mean_, X_scale_ : ndarray of shape (``n_features_in_``,)
        The conditions' (weighted) means and standard deviations.

    integer_targets_ : ndarray of bool of shape (``n_targets_``,)
        The target columns treated as discrete (none unless ``dequantize``).

    vector_field_ : torch.nn.Module
        The trained field, called as ``vector_field_(t, s)`` on rows
        ``s = [(y - y_mean_) / y_scale_, (X - X_mean_) / X_scale_]``: it
        returns ds/dt, whose condition columns are 0 (the condition rides
        along unchanged). A fit of at most 1,000 pairs with early stopping
        (``validation_fraction``) holds a ``FieldMixture`` instead, whose
        ``members`` are two such fields; the model's density is the mean of
        theirs, and the mixture itself has no velocity.

    path_, device_, n_iter_, loss_curve_, validation_scores_ : object
        As :class:`FlowMatchingDensity`'s; the held-out scores are
        conditional log densities. ``n_iter_`` and ``loss_curve_`` are those
        of the training that held pairs out, also where the model was then
        trained again on every pair (``validation_fraction``).

    likelihood_error_ : dict
        The error of :meth:`score_samples`' solver measured at the end of
        :meth:`fit`, as :class:`FlowMatchingDensity`'s, on held-out pairs
        (or the model's own draws given training conditions).

    See Also
    --------
    FlowMatchingDensity : The unconditional density, with the same parameters
        and a choice of network (``architecture``).
    sklearn.gaussian_process.GaussianProcessRegressor : A Gaussian
        predictive density.

    Notes
    -----
    :meth:`score` is the mean conditional log-likelihood, not R^2: the
    estimator is tagged as a regressor whose ``score`` is not R^2, so
    ``cross_val_score(est, X, y)`` and ``GridSearchCV`` rank by likelihood.
    In a :class:`~sklearn.pipeline.Pipeline` that preprocesses X, ``fit``,
    ``predict`` and ``score`` work through the pipeline; call
    :meth:`score_samples` and :meth:`sample` on the last step with the
    transformed X (``pipe[-1].score_samples(pipe[:-1].transform(X), y)``),
    since a Pipeline passes no y to ``score_samples`` and has no ``sample``.

    With torchdiffeq's adaptive solvers, the condition columns of the state
    count in the RMS of the step control (with zero error), which loosens
    ``rtol`` and ``atol`` a little; the default ``"dopri5-rowwise"`` counts
    the targets only.

    References
    ----------
    Lipman et al., "Flow Matching for Generative Modeling", ICLR 2023.
    Dax et al., "Flow Matching for Scalable Simulation-Based Inference",
    NeurIPS 2023. Kerrigan, Migliorini, Smyth, "Dynamic Conditional
    Optimal Transport through Simulation-Free Flows", NeurIPS 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import ConditionalFlowMatchingDensity
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-1, 1, size=(300, 1))
    >>> y = X[:, 0] + 0.1 * rng.normal(size=300)
    >>> est = ConditionalFlowMatchingDensity(hidden_layer_sizes=(32, 32),
    ...                                      max_iter=200, random_state=0)
    >>> est.fit(X, y).score_samples(X[:3], y[:3]).shape
    (3,)
    >>> est.sample(X[:2], n_samples=5, random_state=0).shape
    (2, 5)
    >>> est.predict(X[:2]).shape
    (2,)
    """
