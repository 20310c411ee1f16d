"""FlowMatchingDensity: a density estimator trained by flow matching."""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import DensityMixin, _fit_context
from sklearn.utils import check_scalar
from sklearn.utils._param_validation import Interval, StrOptions
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
from ._flow_estimator import FlowEstimator, effective_rows, restored_on_failure
from ._hollow import HollowVectorField, hollow_layer_sizes
from ._inference import log_densities, samples
from ._likelihood_error import likelihood_error, rows_to_measure
from ._nets import VectorField
from ._ode import check_solver
from ._paths import make_path
from ._preprocessing import (
    check_sample_weight,
    dequantized,
    find_atoms,
    fit_standardization,
    log_jacobian,
    spread_atoms,
    to_data_units,
)

__all__ = ["FlowMatchingDensity"]


class FlowMatchingDensity(DensityMixin, FlowEstimator):
    """Density estimation with a continuous normalizing flow trained by flow matching.

    A neural vector field v(t, z) is trained by flow matching (Lipman et al.,
    2023; Tong et al., 2024) to carry Gaussian noise at t = 0 to the
    standardized data at t = 1. Its log density is exact up to the ODE
    solver's tolerance, by the instantaneous change of variables with the
    exact divergence of the field; samples integrate noise forwards.

    The data are standardized internally, ``z = (X - mean_) / scale_``, and
    every log density is returned in the caller's units: the Jacobian of the
    standardization, ``-sum(log(scale_))``, is included.

    Parameters
    ----------
    path : {"fm", "icfm", "ot-cfm", "vp"}, default="fm"
        The probability path joining noise and data:

        ``"fm"``: Lipman et al.'s optimal-transport path, ``sigma`` its width
        at the data end; ``"icfm"``: straight lines between independent noise
        and data, blurred by noise of standard deviation ``sigma``;
        ``"ot-cfm"``: the same, paired by minibatch optimal transport;
        ``"vp"``: the trigonometric variance-preserving path. The likelihood
        uses the path's own t = 0 marginal as base density.

    sigma : float or "auto", default=0.01
        The path's noise level, in standardized units (see ``path``). It
        acts as a smoothing bandwidth: larger values give smoother densities.
        ``"auto"`` shrinks it as rows come in, as a kernel bandwidth
        shrinks: ``1.3 * n^-(1 / (d + 4) + 0.3)`` for n rows of d features
        (with ``sample_weight``, their effective number ``sum(w)^2 /
        sum(w^2)``); the value used is ``sigma_``. It helps small
        low-dimensional data and hurt a 30-feature real set, so it is not
        the default: the user guide has the measurements.

    architecture : {"mlp", "hollow"}, default="mlp"
        The vector field's network. ``"mlp"``: an MLP of z, random Fourier
        features of z and features of t; its exact divergence costs about
        d + 1 passes. ``"hollow"``: a HollowNet (Chen & Duvenaud, 2019),
        ``v_i = e(z) tau_i(z_i, c_i(t, z_-i)) + (A(t) z)_i``, whose
        conditioner ``c_i`` never sees ``z_i``, so its exact divergence
        comes with the forward pass (the Gaussian envelope ``e`` hands the
        field to its linear part far from the data): scoring costs far
        less, with a density quality that depends on the data: better on
        large sets in many dimensions, worse on small tables, far worse in
        2-D (the user guide's "Choosing the network" measures both).

    hidden_layer_sizes : array-like of int or "auto", default="auto"
        Widths of the hidden layers. For ``"mlp"``, of the MLP (``"auto"``:
        four layers of 256). For ``"hollow"``, units per feature of each
        layer of the conditioner, and of tau's hidden layer (the last
        width); ``"auto"``: two layers as wide as make a forward pass cost
        about one pass of the default MLP at the same d. Narrower or
        shallower networks score faster but fit sharp densities less well.

    max_iter : int or "auto", default="auto"
        Largest number of optimizer steps (minibatches) of training; early
        stopping may take fewer. ``"auto"`` grows with the square root of
        the number of rows, between a floor and a cap: 70 sqrt(n_samples)
        steps, clipped to [2000, 20000].

    likelihood_max_iter : int, default=0
        Steps of maximum-likelihood fine-tuning after flow matching; 0
        skips it. Each step descends the negative log-likelihood of 64 rows
        through a 16-step RK4 solve of the likelihood ODE (exact
        divergence), with a kinetic-energy penalty, at 5% of
        ``learning_rate``. The result is checked on the held-out rows (up
        to 512 training rows where none are held out) under the scoring
        solver: if it scores them clearly worse than the flow-matching
        weights (by more than two standard errors), those are kept instead.
        Data of more than 3 features are refused (``ValueError``). Its gain
        and cost are measured in the user guide ("Likelihood fine-tuning").

    batch_size : int, default=512
        Number of rows in each minibatch; rows are drawn with replacement,
        so this may exceed the number of samples.

    learning_rate : float, default=2e-3
        Peak learning rate of Adam, reached after a linear warm-up over the
        first 5% of the steps and then decayed to zero along a cosine.

    validation_fraction : float, default=0.1
        Fraction of the rows (at most 512) held out to choose the weights by
        their log-likelihood, checked 25 times during training (every 80
        steps in shorter fits); the best weights are kept. 0 trains on
        every row and keeps the last weights.

    n_iter_no_change : int or None, default=10
        Stop training when that many validation scores in a row have not
        improved on the best one. None disables the held-out split and
        early stopping altogether.

    dequantize : bool, default=True
        Treat the columns whose every training value is a whole number
        (counts, ratings, codes) as discrete: the model is a continuous
        density q of X + U, U ~ U[0, 1), so integers cannot make it grow
        without bound. :meth:`score_samples` then returns log q(x + u) for
        one draw of u per row, an unbiased estimate of a lower bound on
        log P(x) (Theis et al., 2016); the draw comes from the row's own
        values, so equal rows score alike in any call. :meth:`sample`
        rounds those columns down. False models every column as continuous.

    solver : {"dopri5-rowwise", "dopri5", "dopri8", "bosh3", "fehlberg2", \
            "adaptive_heun", "euler", "midpoint", "heun3", "rk4"}, \
            default="dopri5-rowwise"
        The ODE solver of :meth:`score_samples` and :meth:`sample`.
        ``"dopri5-rowwise"``: skflow's Dormand-Prince 5(4), with steps of
        its own for every row and the divergence integrated along each
        row's trajectory by quadrature on panels of its own, so a row's
        score does not depend on the other rows of the call. The others
        are torchdiffeq's: the next five choose steps shared by the rows
        solved together from ``rtol`` and ``atol``, the last four take
        ``n_steps`` equal steps. ``likelihood_error_`` gives the error the
        fitted solver makes.

    n_steps : int, default=None
        Number of steps of a fixed-step solver (required by them, ignored by
        the adaptive ones).

    rtol : float, default=1e-6
        Relative tolerance of an adaptive solver: a step is accepted when
        its estimated error is below ``atol + rtol * |x|`` (RMS over the
        coordinates of the state x, per row for ``"dopri5-rowwise"``), and
        a quadrature panel of the divergence when its error estimate is
        below 1,000 times ``atol + rtol * |integral|`` per unit of time
        (3,000 times from 16 features on, where nodes cost more).

    atol : float, default=1e-6
        Absolute tolerance of an adaptive solver (see ``rtol``). The
        errors of the log densities that the defaults give are measured
        against a float64 solve in the user guide.

    divergence : {"exact", "hutchinson"}, default="exact"
        The divergence in the likelihood: exact (about d + 1 passes of the
        network), or Hutchinson's unbiased estimate with ``n_probes``
        Rademacher probes per row, drawn from the row's own values, cheaper
        in high dimension but noisy.

    n_probes : int, default=1
        Number of Hutchinson probes; ignored when ``divergence="exact"``.

    inference_batch_size : int or "auto", default="auto"
        Rows solved together by :meth:`score_samples` and :meth:`sample`,
        which bounds their memory. ``"auto"`` bounds a chunk's largest tensor
        to 2^22 numbers on the CPU and 2^25 on accelerators.

    device : str or torch.device, default="auto"
        Where the network runs: ``"auto"`` picks CUDA, then MPS, then the
        CPU; or a torch device name (``"cuda:1"``). Resolved in ``device_``.

    dtype : {"float32", "float64"}, default="float32"
        Floating-point precision of the network and of the ODE solves.
        Outputs are float64 either way.

    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the minibatches, times and noise of
        training, and the Hutchinson probes. Pass an int for reproducible
        fits and scores (bitwise-identical on the CPU).

    verbose : int, default=0
        1: progress bars (standard error) for :meth:`fit`, with its loss,
        and over the chunks of scoring and sampling; 2: a line with the
        loss about ten times during :meth:`fit` instead; 0: silence.

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
        The trained field (a moving average of the training weights), in
        eval mode, on ``device_``, called as ``vector_field_(t, z)``: ``t`` a
        scalar tensor in [0, 1] (0 noise, 1 data), ``z`` of shape
        ``(n, n_features_in_)`` in standardized units ``(X - mean_) /
        scale_``; it returns dz/dt. With ``path_.log_base_density`` it is all
        another solver needs: ``log p(x) = log p_z(z) - sum(log(scale_))``.

    sigma_ : float
        The path's sigma the field was trained with: ``sigma``, or the value
        ``"auto"`` chose.

    path_ : object
        The path the field was trained on; its ``log_base_density(z)`` and
        ``sample_base`` are the t = 0 marginal (the class is private).

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

    likelihood_error_ : dict
        The error of :meth:`score_samples`' solver on this model, measured
        at the end of :meth:`fit`: ``{"mean": ..., "max": ..., "n_rows":
        ...}``, the mean and largest absolute error (nats) of the log
        density, with the exact divergence, of up to 256 held-out rows
        (fewer in high dimension; the model's own samples where no rows
        are held out), against a float64 dopri5 solve at rtol = atol =
        1e-8. It describes the solver settings of the fit; after
        ``set_params(solver=...)`` it no longer applies.

    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture models.

    Notes
    -----
    :meth:`score` returns the *mean* log-likelihood, as
    :class:`~sklearn.mixture.GaussianMixture` does (KernelDensity returns
    the sum), so that ``GridSearchCV`` needs no ``scoring=``.

    Scoring and sampling change nothing on the estimator, so concurrent
    calls are safe; :func:`skflow.solver_stats` counts what they cost.

    The default solver, ``"dopri5-rowwise"``, and the fixed-step solvers
    score each row independently of the others; torchdiffeq's adaptive
    solvers (and their quadrature) share steps (and panels) across the
    rows they integrate together, so a row's log density can change within
    their tolerance with the other rows of the call.

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
        **FlowEstimator._parameter_constraints,
        "architecture": [StrOptions({"mlp", "hollow"})],
        "sigma": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
    }

    # The network classes by architecture; studies subclass these too.
    _network: ClassVar[type[VectorField]] = VectorField
    _hollow_network: ClassVar[type[HollowVectorField]] = HollowVectorField
    # Whether dequantization also spreads the atoms of non-integer columns
    # (values that many rows share) over cells: the outlier detector's
    # ranking, not a density of the data as they are (see _fit).
    _spreads_atoms: ClassVar[bool] = False

    def __init__(
        self,
        *,
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
        self.path = path
        self.sigma = sigma
        self.architecture = architecture
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
            If training diverges: the loss or the weights become NaN or
            infinite, the trained field fits the flow-matching targets no
            better than the zero field, or its held-out log-likelihood falls
            far below the base density's. No model is stored then, and a
            previously fitted one is kept.

        Notes
        -----
        Interrupting the fit (``KeyboardInterrupt``, Ctrl-C) after the first
        training step stops it with a warning and keeps the moving average
        of the weights so far: ``n_iter_`` says how many steps were taken.
        Any error leaves the estimator as it was before the call.
        """
        with restored_on_failure(self):
            return self._fit(X, sample_weight)

    def _fit(self, X, sample_weight):
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        # Only ratios matter: scaled to at most 1 in float64 before any sum or
        # float32 cast, so weights of 1e-300 or 1e300 neither vanish nor
        # overflow there.
        sample_weight = sample_weight / sample_weight.max()
        sigma = self._sigma(sample_weight, X.shape[1])
        hidden_layer_sizes = self._check_hidden_layer_sizes(X.shape[1])
        device = resolve_device(self.device)
        dtype = DTYPES[self.dtype]
        check_dtype_on_device(dtype, device)
        check_solver(self.solver, self.n_steps)

        X = X.astype(np.float64, copy=False)
        mean, scale, discrete = fit_standardization(
            X, sample_weight, dequantize=self.dequantize, sigma=sigma
        )
        rng = np.random.RandomState(draw_seed(self.random_state))
        init_seed, train_seed, probe_seed = (draw_seed(rng) for _ in range(3))
        atoms = None
        if self._spreads_atoms:
            # A spike of width about sigma on an atom would make every row
            # there look typical, whatever its other columns; spread over a
            # cell, its mass weighs as much as a column's usual density
            # (the rule and the width: benchmarks/results/atoms.md). One
            # draw for the fit (scoring draws from each row's values).
            atoms = np.empty((X.shape[1], 0))
            if self.dequantize:
                atoms = find_atoms(
                    X,
                    sample_weight,
                    discrete,
                    self._recipe.atom_share,
                    self._recipe.atom_max_count,
                )
            if not np.isnan(atoms).all():
                X = spread_atoms(
                    X,
                    atoms,
                    self._recipe.atom_width * scale,
                    np.random.default_rng([train_seed, 1]).random(X.shape),
                )
        n_bytes = X.size * torch.finfo(dtype).bits // 8
        data = standardized_tensor(
            X, mean, scale, training_data_device(n_bytes, device), dtype
        )
        dequantize = (
            to_tensor(discrete / scale, device, dtype) if discrete.any() else None
        )
        path = make_path(self.path, sigma)
        field = self._build_field(X.shape[1], hidden_layer_sizes, init_seed)
        field, loss_curve, validation_scores, held_out = self._train(
            field.to(device=device, dtype=dtype),
            path,
            data,
            to_tensor(sample_weight, device, dtype),
            sample_weight,
            dequantize,
            rng,
            make_generator(train_seed, device),
        )
        error = self._measure_likelihood_error(field, path, held_out, draw_seed(rng))
        self.mean_, self.scale_, self.integer_columns_ = mean, scale, discrete
        if atoms is not None:
            self.atoms_ = atoms
        self.sigma_ = sigma
        self.path_, self.vector_field_, self.device_ = path, field, device
        self.n_iter_ = len(loss_curve)
        self.loss_curve_ = loss_curve
        self.validation_scores_ = validation_scores
        self.likelihood_error_ = error
        self._probe_seed = probe_seed
        return self

    def _sigma(self, sample_weight: np.ndarray, n_features: int) -> float:
        """``sigma``, or for "auto" the recipe's value for the rows'
        effective number (:func:`effective_rows`)."""
        if self.sigma != "auto":
            return float(self.sigma)
        return self._recipe.sigma(effective_rows(sample_weight), n_features)

    def _measure_likelihood_error(self, field, path, held_out, seed) -> dict:
        """``likelihood_error_``: the solver's error on a few held-out rows,
        or where none are held out, on the model's own samples."""
        n_rows = rows_to_measure(field.n_features)
        parameter = next(field.parameters())
        if held_out is not None:
            z = held_out.z[:n_rows]
        else:
            noise = path.sample_base(
                n_rows,
                field.n_features,
                generator=make_generator(seed, torch.device("cpu")),
                device=torch.device("cpu"),
                dtype=torch.float32,
            )
            z = samples(
                field,
                noise,
                solver=self._solver_options(),
                rows_per_chunk=n_rows,
                verbose=0,
            )
            z = to_tensor(z, parameter.device, parameter.dtype)
        return likelihood_error(field, z, path.log_base_density, self._solver_options())

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
        # The noise is drawn on the CPU, so one seed gives the same noise on
        # every device and for every chunking.
        noise = self.path_.sample_base(
            n_samples,
            self.n_features_in_,
            generator=make_generator(draw_seed(random_state), torch.device("cpu")),
            device=torch.device("cpu"),
            dtype=torch.float32,
        )
        Z = samples(
            self.vector_field_,
            noise,
            solver=self._solver_options(),
            rows_per_chunk=self._rows_per_chunk(n_directions=1),
            verbose=self.verbose,
        )
        return to_data_units(
            Z, self.mean_, self.scale_, getattr(self, "integer_columns_", None)
        )

    def _log_density(self, X: np.ndarray) -> np.ndarray:
        """score_samples on an already validated X."""
        check_solver(self.solver, self.n_steps)
        hutchinson = self.divergence == "hutchinson"
        integer_columns = getattr(self, "integer_columns_", None)
        atoms = getattr(self, "atoms_", None)
        atom_widths = self._recipe.atom_width * self.scale_

        def standardize(X_rows):
            X_rows = dequantized(
                X_rows,
                integer_columns,
                self._probe_seed,
                atoms=atoms,
                atom_widths=atom_widths,
            )
            return (X_rows - self.mean_) / self.scale_

        log_density = log_densities(
            self.vector_field_,
            self.path_.log_base_density,
            X,
            standardize=standardize,
            n_probes=self.n_probes if hutchinson else None,
            probe_seed=self._probe_seed,
            solver=self._solver_options(),
            rows_per_chunk=self._rows_per_chunk(
                self.n_probes
                if hutchinson
                else self.vector_field_.divergence_directions
            ),
            verbose=self.verbose,
        )
        return log_density + log_jacobian(self.scale_)

    def _auto_hidden_layer_sizes(self, n_features: int) -> tuple[int, ...]:
        if self.architecture == "hollow":
            recipe = self._recipe
            return hollow_layer_sizes(
                n_features, recipe.hidden_layer_sizes, recipe.n_fourier_features
            )
        return self._recipe.hidden_layer_sizes

    def _build_field(self, n_features, hidden_layer_sizes, seed) -> torch.nn.Module:
        """A new field of ``architecture``, on the CPU in float32.

        Initial weights come from a forked global RNG on the CPU, so the
        same seed gives the same network on every device.
        """
        recipe = self._recipe
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.architecture == "hollow":
                return self._hollow_network(
                    n_features,
                    hidden_layer_sizes,
                    recipe.n_time_frequencies,
                    activation=recipe.activation,
                )
            return self._network(
                n_features,
                hidden_layer_sizes,
                recipe.n_time_frequencies,
                n_fourier_features=recipe.n_fourier_features,
                fourier_scale=recipe.fourier_scale(n_features),
                activation=recipe.activation,
            )
