"""The training recipe: every constant of a fit that is not a parameter.

A frozen dataclass, read by the estimator and handed piece by piece to the
network and the training loop. A study that varies the recipe subclasses
the estimator with another instance::

    class NoSkew(FlowMatchingDensity):
        _recipe = dataclasses.replace(Recipe(), time_skew=0.0)

instead of patching a module. Why each default was chosen, and what it was
measured against, is in ``benchmarks/results/recipe_ablation.md`` (the network,
the time skew, the steps), ``benchmarks/results/checkpoint_selection.md``
(early stopping), ``benchmarks/results/smoothing_by_size.md`` (``sigma="auto"``),
``benchmarks/results/likelihood_finetuning.md`` (``likelihood_max_iter``) and
``benchmarks/results/atoms.md`` (the detector's atoms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Recipe"]


@dataclass(frozen=True)
class Recipe:
    """Training constants of :class:`~skflow.FlowMatchingDensity`.

    Attributes
    ----------
    hidden_layer_sizes : tuple of int
        The MLP's widths for ``hidden_layer_sizes="auto"``.
    n_fourier_features : int
        Random Fourier features of z fed to the network; 0 for none.
    fourier_scale_factor : float
        Multiplies the frequencies' standard deviation (see ``fourier_scale``).
    n_time_frequencies : int
        sin/cos pairs of the time embedding.
    activation : {"gelu", "silu"}
        The hidden layers' activation.
    condition_layer_sizes : tuple of int
        :class:`~skflow.ConditionalFlowMatchingDensity`: widths of the MLP
        that embeds the condition x for the field; the last is the
        embedding's (chosen in benchmarks/results/condition_embedding.md).
    condition_noise_scale : float
        :class:`~skflow.ConditionalFlowMatchingDensity`: the standardized
        conditions of every minibatch get Gaussian noise of standard
        deviation ``scale * n^(-1 / (p + 4))`` for n rows of p conditions
        (see ``condition_noise``); 0 for none, the default:
        benchmarks/results/condition_noise.md found no scale that helps
        without costing some sets more than the seeds' noise.
    divergence_matching_weight : float
        Weight of flow-divergence matching's term in the training loss
        (``skflow._training``; Huang et al., ICML 2025) ...
    divergence_matching_rows : int or None
        ... measured on this many rows of each minibatch (None: all) ...
    divergence_matching_features, divergence_matching_targets : tuple of int
        ... where the field moves this many coordinates: features of a
        density (2 only: chosen in benchmarks/results/divergence_matching.md;
        1-D densities did not gain on both sets of
        benchmarks/results/divergence_matching_1d.md), targets of a
        conditional density (2 only: a 1-D target lost on a small set,
        benchmarks/results/conditional_levers.md); see
        ``divergence_weight``.
    auto_sigma_scale, auto_sigma_rate : float
        ``sigma="auto"``: ``scale * n^-(1 / (d + 4) + rate)`` for n rows
        (weighted: their effective number) of d features.
    auto_steps_per_sqrt_row, auto_steps_min, auto_steps_max : float, int, int
        ``max_iter="auto"``: this many steps per square root of the number
        of rows, clipped to [min, max].
    warmup_fraction : float
        Share of the steps over which the learning rate rises linearly,
        before its cosine decay.
    ema_decay : float
        Cap of the decay of the weights' moving average; the decay is
        warmed up as (1 + step) / (10 + step).
    time_sampling : {"power", "logit-normal", "stratified"}
        How training times are drawn (``skflow._training.TIME_SAMPLERS``).
    time_skew : float
        a in t = u^(1 / (1 + a)), u uniform: a > 0 puts more training
        times near the data end, where the field is sharpest.
    gradient_clip_norm : float or None
        Clip the gradient's norm to this; None does not clip.
    validation_max_rows : int
        Early stopping holds out at most this many rows.
    validation_steps : int
        rk4 steps of the held-out score (16 kept the same checkpoints within
        noise: benchmarks/results/checkpoint_scorer.md).
    validation_exact_up_to : int
        The held-out score uses the exact divergence where it costs at most
        this many directions through the field (the features for the MLP,
        1 for the HollowNet) and one fixed Hutchinson probe above.
    validation_checks : int
        Held-out checks in a fit of ``validation_checks *
        validation_min_steps_between`` steps or more ...
    validation_min_steps_between : int
        ... and at least this many steps between two checks in shorter fits.
    likelihood_steps : int
        Likelihood fine-tuning (``likelihood_max_iter``): RK4 steps of the
        differentiable solve, at t = 1 - s^2 for s uniform.
    likelihood_batch_size : int
        Rows per fine-tuning step.
    likelihood_learning_rate_factor : float
        The fine-tuning learning rate, as a share of ``learning_rate``.
    likelihood_kinetic_weight : float
        Weight of the kinetic-energy penalty (the mean over rows of the
        integral of |v|^2 over t).
    likelihood_ema_decay : float
        Cap of the decay of the fine-tuned weights' moving average.
    likelihood_max_features : int
        Fine-tuning is refused above this many moving features (targets):
        with one Hutchinson probe, it made 10-D and 16-D densities worse.
    atom_share, atom_max_count : float, int
        :class:`~skflow.FlowMatchingOutlierDetector`: a value of a column
        that is not whole numbers is an atom where it carries at least this
        share of the training weight, in a column of more than its inverse
        of distinct values, with at least this share off its atoms and at
        most ``atom_max_count`` atoms (more are a rounding's levels) ...
    atom_width : float
        ... and its rows are spread uniformly over a cell this many of the
        column's standard deviations wide, centred on it (chosen in
        benchmarks/results/atoms.md).
    """

    hidden_layer_sizes: tuple[int, ...] = (256, 256, 256, 256)
    n_fourier_features: int = 128
    fourier_scale_factor: float = 1.0
    n_time_frequencies: int = 4
    activation: str = "gelu"
    condition_layer_sizes: tuple[int, ...] = (128, 128, 64)
    condition_noise_scale: float = 0.0
    divergence_matching_weight: float = 0.1
    divergence_matching_rows: int | None = 128
    divergence_matching_features: tuple[int, ...] = (2,)
    divergence_matching_targets: tuple[int, ...] = (2,)
    auto_sigma_scale: float = 1.3
    auto_sigma_rate: float = 0.3
    auto_steps_per_sqrt_row: float = 70
    auto_steps_min: int = 2000
    auto_steps_max: int = 20000
    warmup_fraction: float = 0.05
    ema_decay: float = 0.999
    time_sampling: str = "power"
    time_skew: float = 1.0
    gradient_clip_norm: float | None = None
    validation_max_rows: int = 512
    validation_steps: int = 8
    validation_exact_up_to: int = 3
    validation_checks: int = 25
    validation_min_steps_between: int = 80
    likelihood_steps: int = 16
    likelihood_batch_size: int = 64
    likelihood_learning_rate_factor: float = 0.05
    likelihood_kinetic_weight: float = 0.05
    likelihood_ema_decay: float = 0.99
    likelihood_max_features: int = 3
    atom_share: float = 0.05
    atom_max_count: int = 2
    atom_width: float = 1.0

    def fourier_scale(self, n_features: int) -> float:
        """Standard deviation of the random frequencies: 4 in 1 or 2
        dimensions, falling as d^-1.5 above (oscillations per unit of
        distance shrink as distances between points grow)."""
        return self.fourier_scale_factor * 4.0 * min(1.0, 2.0 / n_features) ** 1.5

    def sigma(self, n_samples: float, n_features: int) -> float:
        """The path's sigma for ``sigma="auto"``: a smoothing bandwidth that
        shrinks as rows come in. Scott's rate n^(-1 / (d + 4)) alone keeps
        too much of it on large sets, where the network generalises beyond
        a kernel estimate, hence the extra n^-rate."""
        exponent = 1.0 / (n_features + 4) + self.auto_sigma_rate
        return self.auto_sigma_scale * float(n_samples) ** -exponent

    def condition_noise(self, n_samples: float, n_conditions: int) -> float:
        """Standard deviation of the noise added to the standardized
        conditions while training (noise regularization, Rothfuss et al.
        2019): Scott's rate in the conditions' dimension, so it smooths
        E[y | x] on small sets and fades on large ones."""
        exponent = 1.0 / (n_conditions + 4)
        return self.condition_noise_scale * float(n_samples) ** -exponent

    def divergence_weight(self, n_moving: int, *, conditional: bool) -> float:
        """Flow-divergence matching's weight for a field moving ``n_moving``
        coordinates: its exact divergence costs one direction through the
        network per coordinate, every step, so it is paid only where it was
        measured to fit the time budget and to help."""
        if conditional:
            counts = self.divergence_matching_targets
        else:
            counts = self.divergence_matching_features
        return self.divergence_matching_weight if n_moving in counts else 0.0

    def max_iter(self, n_samples: int) -> int:
        """The number of steps of ``max_iter="auto"`` for n_samples rows."""
        steps = self.auto_steps_per_sqrt_row * math.sqrt(n_samples)
        return int(min(max(steps, self.auto_steps_min), self.auto_steps_max))

    def validation_every(self, max_iter: int) -> int:
        """Steps between two held-out checks (the last step is always one):
        short fits are not made mostly of checks."""
        return max(
            self.validation_min_steps_between, max_iter // self.validation_checks
        )
