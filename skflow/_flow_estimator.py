"""What the flow-matching estimators share: parameters, training, pickling.

:class:`~skflow.FlowMatchingDensity` models p(x) and
:class:`~skflow.ConditionalFlowMatchingDensity` models p(y | x) with the same
field, training loop and solvers; ``FlowEstimator`` holds the parameters
they share and the steps of ``fit`` and of scoring that do not depend on
what is modelled.
"""

from __future__ import annotations

import contextlib
import copy
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from ._device import DTYPES, draw_seed, on_available_device
from ._early_stopping import check_beats_base_density, hold_out, rows_score
from ._inference import rows_per_chunk, score_chunk
from ._likelihood_training import fine_tune_likelihood, not_worse
from ._nets import FieldMixture
from ._ode import DIVERGENCES, SOLVERS, SolveFailedError
from ._paths import PATHS
from ._recipe import Recipe
from ._training import diverged_message, train_vector_field

__all__ = ["FlowEstimator", "effective_rows", "restored_on_failure"]


def effective_rows(weights: np.ndarray | torch.Tensor) -> float:
    """Kish's effective number of rows, sum(w)^2 / sum(w^2): n for n equal
    weights, rows of weight 0 (held out) not counted, and like every use of
    the weights, a function of their ratios."""
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().double().numpy()
    return float(weights.sum() ** 2 / np.square(weights).sum())


@contextlib.contextmanager
def restored_on_failure(estimator):
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


class FlowEstimator(BaseEstimator):
    """The parameters and private steps the flow-matching estimators share."""

    # Every training constant that is not a parameter. Studies subclass the
    # estimator with another Recipe (see skflow/_recipe.py).
    _recipe: ClassVar[Recipe] = Recipe()
    # Fits of at most this many rows, whose held-out rows are a full
    # validation_fraction of them, train again on every row once early
    # stopping has chosen its step (``_refit``); 0: never.
    _refit_max_rows: ClassVar[int] = 0
    # The refit trains this many fields, the first from the initial weights
    # of the fit, the others from new ones, all on every row up to the same
    # step; more than 1 makes the model the mixture of their densities
    # (``FieldMixture``).
    _refit_members: ClassVar[int] = 1

    _parameter_constraints: ClassVar[dict] = {
        "path": [StrOptions(set(PATHS))],
        "sigma": [Interval(Real, 0, None, closed="left")],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "likelihood_max_iter": [Interval(Integral, 0, None, closed="left")],
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

    def _train(
        self,
        field,
        path,
        data,
        weights,
        sample_weight,
        dequantize,
        rng,
        generator,
        n_targets=None,
        new_field=None,
    ):
        """Flow matching on ``data``, with early stopping where rows are held
        out, then likelihood fine-tuning if asked; ``n_targets``: rows are
        ``[y, x]`` for a conditional field; ``new_field(seed)``: a field of
        the same architecture with new weights, for the refit's members."""
        n_moving = data.shape[1] if n_targets is None else n_targets
        if self.likelihood_max_iter and n_moving > self._recipe.likelihood_max_features:
            raise ValueError(
                "likelihood_max_iter > 0 needs at most "
                f"{self._recipe.likelihood_max_features} features (targets for "
                f"a conditional model), got {n_moving}: beyond that, "
                "fine-tuning was measured to make densities worse (user "
                'guide, "Likelihood fine-tuning"). Use likelihood_max_iter=0.'
            )
        max_iter = self._max_iter(len(data))
        refit = len(data) <= self._refit_max_rows
        if refit:
            # Before hold_out zeroes the held-out rows' weights.
            initial_field, every_row = copy.deepcopy(field), weights.clone()
        # Held-out rows get weight 0: the sampler never draws them.
        validation_score = self._held_out_score(
            data, weights, sample_weight, path, dequantize, rng, n_targets
        )
        recipe = self._recipe
        schedule = dict(
            max_iter=max_iter,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            generator=generator,
            dequantize=dequantize,
            warmup_fraction=recipe.warmup_fraction,
            ema_decay=recipe.ema_decay,
            time_sampling=recipe.time_sampling,
            time_skew=recipe.time_skew,
            gradient_clip_norm=recipe.gradient_clip_norm,
            n_targets=n_targets,
            condition_noise=0.0
            if n_targets is None
            else recipe.condition_noise(
                effective_rows(weights), data.shape[1] - n_targets
            ),
            divergence_weight=recipe.divergence_weight(
                n_moving, conditional=n_targets is not None
            )
            if path.has_divergence_residual
            else 0.0,
            divergence_rows=recipe.divergence_matching_rows,
            verbose=self.verbose,
        )
        field, loss_curve, validation_scores = train_vector_field(
            field,
            path,
            data,
            weights,
            validation_score=validation_score,
            validation_every=recipe.validation_every(max_iter),
            n_iter_no_change=self.n_iter_no_change,
            **schedule,
        )
        if validation_score is not None:
            check_beats_base_density(
                validation_scores,
                validation_score,
                lambda what: diverged_message(what, self.learning_rate),
            )
            if refit and self._ran_its_course(
                len(loss_curve), max_iter, validation_scores
            ):
                # Fine-tuning works on one field: a fit that asks for it
                # keeps a single member.
                n_members = 1 if self.likelihood_max_iter else self._refit_members
                field = self._refit(
                    [initial_field]
                    + [new_field(draw_seed(rng)) for _ in range(n_members - 1)],
                    field,
                    path,
                    data,
                    every_row,
                    schedule,
                    validation_scores,
                )
        if self.likelihood_max_iter:
            field = self._fine_tune(
                field,
                path,
                data,
                weights,
                dequantize,
                rng,
                generator,
                validation_score,
                n_targets,
            )
        return field, loss_curve, validation_scores, validation_score

    def _ran_its_course(self, n_steps_done, max_iter, validation_scores):
        """Whether training took all its steps or was ended by early
        stopping, not interrupted."""
        since_best = len(validation_scores) - 1 - int(np.argmax(validation_scores))
        return n_steps_done == max_iter or since_best >= self.n_iter_no_change

    def _refit(
        self,
        initial_fields,
        checkpoint,
        path,
        data,
        every_row,
        schedule,
        validation_scores,
    ):
        """Train each of ``initial_fields`` on every row, held-out rows
        included, with the same schedule, up to the step of the
        ``checkpoint`` early stopping kept: one field, or the mixture of
        several. The checkpoint stays if a refit is interrupted."""
        max_iter = schedule["max_iter"]
        best_check = int(np.argmax(validation_scores)) + 1
        kept_step = min(self._recipe.validation_every(max_iter) * best_check, max_iter)
        members = []
        for initial_field in initial_fields:
            member, losses, _ = train_vector_field(
                initial_field,
                path,
                data,
                every_row,
                stop_after=kept_step,
                what="refit",
                **schedule,
            )
            if len(losses) < kept_step:
                return checkpoint
            members.append(member)
        return members[0] if len(members) == 1 else FieldMixture(members)

    def _fine_tune(
        self,
        field,
        path,
        data,
        weights,
        dequantize,
        rng,
        generator,
        held_out,
        n_targets,
    ):
        """Likelihood fine-tuning, kept unless it scores the held-out rows
        (or training rows, where none are held out) clearly worse."""
        recipe = self._recipe
        tuned, _ = fine_tune_likelihood(
            field,
            path,
            data,
            weights,
            max_iter=self.likelihood_max_iter,
            learning_rate=self.learning_rate * recipe.likelihood_learning_rate_factor,
            generator=generator,
            recipe=recipe,
            dequantize=dequantize,
            n_targets=n_targets,
            verbose=self.verbose,
        )
        rows = held_out
        if rows is None:
            rows = self._training_rows_score(
                data, weights, path, dequantize, rng, n_targets
            )
        check = self._scoring_check(rows)
        if not_worse(check(field), check(tuned), rows.weights.cpu().numpy()):
            return tuned
        return field

    def _training_rows_score(self, data, weights, path, dequantize, rng, n_targets):
        """Where no rows are held out, fine-tuning checks its weights on up
        to ``validation_max_rows`` training rows instead."""
        recipe = self._recipe
        candidates = np.flatnonzero(weights.cpu().numpy() > 0)
        rows = rng.permutation(candidates)[: recipe.validation_max_rows]
        return rows_score(
            data,
            weights,
            rows,
            path,
            dequantize,
            rng,
            recipe=recipe,
            n_targets=n_targets,
        )

    def _scoring_check(self, rows):
        """``check(field)``: the log density of each row of the score
        ``rows`` under the scoring solver (exact divergence), or None where
        the solve fails."""
        solver = self._solver_options()

        def check(field):
            try:
                log_density, _, _ = score_chunk(
                    field, rows.z, rows.log_base_density, None, solver
                )
            except SolveFailedError:
                return None
            return log_density

        return check

    def _held_out_score(
        self, data, weights, sample_weight, path, dequantize, rng, n_targets=None
    ):
        """The early-stopping score of held-out rows, or None (a study may
        override this); the held-out rows' training weights are set to 0."""
        if self.n_iter_no_change is None:
            return None
        return hold_out(
            data,
            weights,
            sample_weight,
            path,
            dequantize,
            rng,
            fraction=self.validation_fraction,
            recipe=self._recipe,
            n_targets=n_targets,
        )

    def _solver_options(self) -> dict:
        return {
            "solver": self.solver,
            "n_steps": self.n_steps,
            "rtol": self.rtol,
            "atol": self.atol,
        }

    def _rows_per_chunk(self, n_directions: int) -> int:
        return rows_per_chunk(
            self.inference_batch_size,
            self.vector_field_.widest_layer,
            n_directions,
            self.device_,
        )

    def _max_iter(self, n_samples: int) -> int:
        if self.max_iter != "auto":
            return self.max_iter
        return self._recipe.max_iter(n_samples)

    def _check_hidden_layer_sizes(self, n_features: int) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, str) and sizes == "auto":
            return self._auto_hidden_layer_sizes(n_features)
        sizes = (sizes,) if isinstance(sizes, Integral) else tuple(sizes)
        if not sizes or any(
            not isinstance(size, Integral) or size < 1 for size in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a positive int or a non-empty "
                f"sequence of positive ints, got {self.hidden_layer_sizes!r}."
            )
        return tuple(int(size) for size in sizes)

    def _auto_hidden_layer_sizes(self, n_features: int) -> tuple[int, ...]:
        """The widths of ``hidden_layer_sizes="auto"``."""
        return self._recipe.hidden_layer_sizes

    def __getstate__(self):
        # Store the field on the CPU, so a model fitted on a GPU unpickles
        # on a machine without one.
        state = dict(super().__getstate__())
        if "vector_field_" in state:
            state["vector_field_"] = copy.deepcopy(state["vector_field_"]).to("cpu")
        return state

    def __setstate__(self, state):
        if "vector_field_" in state:
            state["vector_field_"], state["device_"] = on_available_device(
                state["vector_field_"], state["device_"]
            )
        super().__setstate__(state)
