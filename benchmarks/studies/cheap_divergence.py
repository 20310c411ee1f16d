"""Networks whose exact divergence is cheap: density quality in d >= 10 (issue 18).

The default network (an MLP of 4 x 256 GELU units on x, 128 random Fourier
features of x and time features) pays d + 1 network passes for the exact
divergence: the d coordinate directions are pushed through it. Two
networks whose exact trace of dv/dx costs O(1) passes, trained with the
same flow-matching recipe (``FlowMatchingDensity()`` defaults, only the
``_network`` class and ``hidden_layer_sizes`` change):

- ``BilinearTraceField``: v = W3 s(W2 s(W1 [x, time(t)] + b1) + b2) + b3,
  s = GELU, no Fourier features. Its Jacobian is W3 D2 W2 D1 W1x (D the
  slopes s', W1x the columns of W1 acting on x), so
  tr J = sum_kl D2_k W2[k, l] D1_l M[l, k] with M = W1x W3 (H1 x H2, the
  same for every point and time): one extra (n x H1) @ (H1 x H2) product.
  Optionally a learned linear skip A x (trace A is free).
- ``HollowField`` (Chen & Duvenaud, "Neural networks with cheap
  differential operators", NeurIPS 2019): v_i = tau_i(x_i, h_i), with
  h_i = c_i(x_-i, t) from block-masked layers (k units per coordinate; the
  first layer's block i never sees x_i, the next one is block-diagonal) and
  tau_i a one-hidden-layer network of (x_i, h_i) per coordinate. Since
  h_i does not depend on x_i, dv_i/dx_i = d tau_i / d x_i with h_i held
  fixed. k is chosen per d so that a forward pass costs about as many
  multiply-adds as one pass of the default network.

A last column, added later on three of the sets, is skflow's field
(``FlowMatchingDensity(architecture="hollow")``): this HollowNet plus a
linear coupling A(t) x, with early stopping's held-out rows scored by the
exact divergence (its design was chosen in ``hollow_field.py``). Its
committed runs predate the envelope that skflow's HollowNet has since
gained: a re-run measures the field with it.

Both have ``velocity_and_divergence(t, x, probes, workspace)`` (the exact
trace, or the Hutchinson estimate for ``probes``, which early stopping's
held-out score uses above 3 features), so the likelihood engine and the
training loop use them as they use ``skflow._nets.VectorField``. The
script first checks both closed forms against autograd's exact trace in
float64 (and asserts agreement to 1e-10), then fits every network on

- the 10-D mixture of ``known_densities.py`` and Gaussian mixtures in 16
  and 64 dimensions (``engine_levers.mixture``): 10,000 training rows,
  test KL(p || q) = mean(log p - log q) on 5,000 fresh rows, in nats;
- breast_cancer (30-D) and digits (64-D, integer pixels dequantized by
  skflow itself) split 80/20: mean test log-likelihood.

Costs are counted, not timed (the runs share the machine): multiply-adds
of a forward pass and of one with the exact divergence, in units of one
forward pass of the default network at the same d; the cost of scoring a
row is that times the solver's evaluations (``skflow.solver_stats``).

Run from the repository root; ``--shard i/n`` runs every n-th job (one
torch thread each), results accumulate in ``--runs`` (a stopped run
resumes there), and ``--report`` writes ``results/cheap_divergence.{md,json}``:

    python -m benchmarks.studies.cheap_divergence --check
    python -m benchmarks.studies.cheap_divergence --shard 0/2 &
    python -m benchmarks.studies.cheap_divergence --shard 1/2; wait
    python -m benchmarks.studies.cheap_divergence --report

``--seeds``, ``--sets`` and ``--networks`` select jobs.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import skflow
from benchmarks._common import (
    environment,
    environment_line,
    read_runs,
    run_shard,
    shard,
    write_results,
)
from benchmarks.known_densities import KNOWN_DENSITIES
from benchmarks.studies.engine_levers import mixture
from skflow import FlowMatchingDensity
from skflow._nets import TimeFeatures

N_TRAIN, N_TEST = 10_000, 5_000
DEFAULT_RUNS = Path(tempfile.gettempdir()) / "cheap_divergence_runs.jsonl"


def _activation_and_slope(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU(pre) and its derivative at pre."""
    slope = torch.ops.aten.gelu_backward(torch.ones_like(pre), pre)
    return nn.functional.gelu(pre), slope


def _time_inputs(time_features: TimeFeatures, t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return time_features(t.reshape(-1, 1).expand(x.shape[0], 1))


class _TwoLayerField(nn.Module):
    """What both study networks share: ``VectorField``'s constructor
    signature (so the estimator's ``_build_field`` can make them; the Fourier
    arguments are accepted and ignored), two widths, GELU, time features,
    and ``config()`` / ``from_config()`` for persistence."""

    def __init__(
        self,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        n_frequencies: int = 4,
        n_fourier_features: int = 0,
        fourier_scale: float = 1.0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if len(hidden_layer_sizes) != 2 or activation != "gelu":
            raise ValueError("two widths and GELU units")
        self.n_features = int(n_features)
        self.hidden_layer_sizes = tuple(int(width) for width in hidden_layer_sizes)
        self.activation = activation
        self.time_features = TimeFeatures(n_frequencies)

    @property
    def widest_layer(self) -> int:
        return max(self.hidden_layer_sizes)

    @property
    def divergence_directions(self) -> int:
        # As when this study ran: early stopping's held-out score used one
        # Hutchinson probe per row above 3 features, as for the MLP.
        return self.n_features

    def config(self) -> dict:
        return {
            "n_features": self.n_features,
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "n_frequencies": len(self.time_features.frequencies),
            "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config: dict) -> _TwoLayerField:
        return cls(
            config["n_features"],
            config["hidden_layer_sizes"],
            config["n_frequencies"],
            activation=config["activation"],
        )


class BilinearTraceField(_TwoLayerField):
    """A 2-hidden-layer GELU MLP on [x, time features], with an O(1) exact trace.

    The Fourier arguments of ``skflow._nets.VectorField`` are accepted and
    ignored. With ``linear_skip`` the field adds A x (A learned, starting at
    0), whose trace adds trace(A) to the divergence.
    """

    linear_skip = False

    def __init__(
        self, n_features: int, hidden_layer_sizes=(512, 512), *args, **kwargs
    ) -> None:
        super().__init__(n_features, hidden_layer_sizes, *args, **kwargs)
        d = self.n_features
        width1, width2 = self.hidden_layer_sizes
        self.first = nn.Linear(d + self.time_features.n_outputs, width1)
        self.second = nn.Linear(width1, width2)
        self.last = nn.Linear(width2, d)
        self.skip = None
        if self.linear_skip:
            self.skip = nn.Linear(d, d, bias=False)
            nn.init.zeros_(self.skip.weight)

    def _hidden(self, t, x):
        inputs = torch.cat([x, _time_inputs(self.time_features, t, x)], dim=-1)
        h1, slope1 = _activation_and_slope(self.first(inputs))
        h2, slope2 = _activation_and_slope(self.second(h1))
        velocity = self.last(h2)
        if self.skip is not None:
            velocity = velocity + self.skip(x)
        return velocity, slope1, slope2

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([x, _time_inputs(self.time_features, t, x)], dim=-1)
        h = nn.functional.gelu(self.second(nn.functional.gelu(self.first(inputs))))
        velocity = self.last(h)
        if self.skip is not None:
            velocity = velocity + self.skip(x)
        return velocity

    def trace_weights(self) -> torch.Tensor:
        """P = W2 * (W1x W3)^T (H2 x H1): tr J = sum_kl D2_k P[k, l] D1_l."""
        weight_x = self.first.weight[:, : self.n_features]
        return self.second.weight * (weight_x @ self.last.weight).T

    @torch.no_grad()
    def velocity_and_divergence(self, t, x, probes=None, workspace=None):
        velocity, slope1, slope2 = self._hidden(t, x)
        if probes is None:
            # The weights do not change during a solve: P once per solve.
            key = tuple(p._version for p in self.parameters())
            cached = (workspace or {}).get("trace_weights")
            if cached is None or cached[0] != key:
                cached = (key, self.trace_weights())
                if workspace is not None:
                    workspace["trace_weights"] = cached
            divergence = ((slope1 @ cached[1].T) * slope2).sum(-1)
            if self.skip is not None:
                divergence = divergence + self.skip.weight.trace()
            return velocity, divergence
        # Hutchinson: push the probes through (n_probes passes), as VectorField.
        tangent = probes @ self.first.weight[:, : self.n_features].T
        tangent = (tangent * slope1.unsqueeze(1)) @ self.second.weight.T
        products = (tangent * slope2.unsqueeze(1)) @ self.last.weight.T
        if self.skip is not None:
            products = products + probes @ self.skip.weight.T
        return velocity, (products * probes).sum(-1).mean(-1)


class BilinearTraceSkipField(BilinearTraceField):
    """``BilinearTraceField`` plus a learned linear map A x."""

    linear_skip = True


def _uniform(shape: Sequence[int], fan_in: int) -> nn.Parameter:
    bound = 1 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class HollowField(_TwoLayerField):
    """HollowNet: v_i = tau_i(x_i, h_i), h_i = c_i(x_-i, t).

    ``hidden_layer_sizes`` = (k, k_tau): units per coordinate of the
    conditioner's two layers and of tau's hidden layer.
    """

    def __init__(
        self, n_features: int, hidden_layer_sizes=(32, 32), *args, **kwargs
    ) -> None:
        super().__init__(n_features, hidden_layer_sizes, *args, **kwargs)
        d = self.n_features
        k, k_tau = self.hidden_layer_sizes
        n_time = self.time_features.n_outputs
        fan_in = d - 1 + n_time
        # Conditioner, first layer: block i (k units) sees x_j, j != i, and t.
        self.first_x = _uniform((d, k, d), fan_in)
        self.register_buffer("mask", 1 - torch.eye(d).unsqueeze(1))  # (d, 1, d)
        self.first_t = _uniform((d * k, n_time), fan_in)
        self.first_b = _uniform((d * k,), fan_in)
        # Conditioner, second layer: block-diagonal.
        self.hidden_w = _uniform((d, k, k), k)
        self.hidden_b = _uniform((d, k), k)
        # tau_i: (x_i, h_i) -> k_tau GELU units -> v_i.
        self.tau_x = _uniform((d, k_tau), k + 1)
        self.tau_h = _uniform((d, k_tau, k), k + 1)
        self.tau_b = _uniform((d, k_tau), k + 1)
        self.out_w = _uniform((d, k_tau), k_tau)
        self.out_b = _uniform((d,), k_tau)

    def _first_weight(self) -> torch.Tensor:
        return (self.first_x * self.mask).reshape(-1, self.n_features)

    def _layers(self, t, x):
        n, d = x.shape
        time = _time_inputs(self.time_features, t, x)
        pre1 = torch.addmm(self.first_b, x, self._first_weight().T)
        pre1 = (pre1 + time @ self.first_t.T).view(n, d, -1)
        h1, slope1 = _activation_and_slope(pre1)
        pre2 = torch.einsum("ndk,dlk->ndl", h1, self.hidden_w) + self.hidden_b
        h2, slope2 = _activation_and_slope(pre2)
        pre_tau = (
            x.unsqueeze(-1) * self.tau_x
            + torch.einsum("ndk,dlk->ndl", h2, self.tau_h)
            + self.tau_b
        )
        g, slope_tau = _activation_and_slope(pre_tau)
        velocity = (g * self.out_w).sum(-1) + self.out_b
        return velocity, slope1, slope2, slope_tau

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._layers(t, x)[0]

    @torch.no_grad()
    def velocity_and_divergence(self, t, x, probes=None, workspace=None):
        velocity, slope1, slope2, slope_tau = self._layers(t, x)
        if probes is None:
            # h_i does not move with x_i: only tau_i's own path counts.
            divergence = (slope_tau * (self.tau_x * self.out_w)).sum((-1, -2))
            return velocity, divergence
        n, d = x.shape
        n_probes = probes.shape[1]
        tangent = (probes @ self._first_weight().T).view(n, n_probes, d, -1)
        tangent = tangent * slope1.unsqueeze(1)
        tangent = torch.einsum("npdk,dlk->npdl", tangent, self.hidden_w)
        tangent = tangent * slope2.unsqueeze(1)
        tangent = probes.unsqueeze(-1) * self.tau_x + torch.einsum(
            "npdk,dlk->npdl", tangent, self.tau_h
        )
        products = (tangent * slope_tau.unsqueeze(1) * self.out_w).sum(-1)
        return velocity, (products * probes).sum(-1).mean(-1)


# Multiply-adds per row (biases, activations and elementwise work left out).
N_TIME = TimeFeatures(4).n_outputs


def default_costs(d: int) -> tuple[float, float]:
    """(forward, forward with exact divergence) of the default 4 x 256 network
    with 128 Fourier features, as ``VectorField.velocity_and_divergence``
    computes it (the d directions through every layer but the last, whose
    diagonal is an einsum)."""
    forward = d * 64 + (d + 128 + N_TIME) * 256 + 3 * 256 * 256 + 256 * d
    return forward, forward + d * (128 * 256 + 3 * 256 * 256 + 256)


def bilinear_costs(d: int, widths, skip: bool = False) -> tuple[float, float]:
    """The P matrix (d H1 H2 + H1 H2 multiply-adds) is computed once per
    solve and left out: it does not grow with the rows."""
    width1, width2 = widths
    forward = (d + N_TIME) * width1 + width1 * width2 + width2 * d + skip * d * d
    return forward, forward + width1 * width2 + width2


def hollow_costs(d: int, widths) -> tuple[float, float]:
    k, k_tau = widths
    forward = (d + N_TIME) * d * k + d * k * k + d * (k + 1) * k_tau + d * k_tau
    return forward, forward + d * k_tau


def skflow_hollow_costs(d: int, widths) -> tuple[float, float]:
    """``skflow._hollow.HollowVectorField``: the HollowNet and A(t) x."""
    forward, with_divergence = hollow_costs(d, widths)
    return forward + d * d, with_divergence + d * d


def hollow_width(d: int) -> int:
    """k = k_tau making a HollowField pass cost about one default pass."""
    a, b = 2 * d, d * d + N_TIME * d + 2 * d
    return round((-b + math.sqrt(b * b + 4 * a * default_costs(d)[0])) / (2 * a))


def _estimator(network: type[nn.Module]) -> type[FlowMatchingDensity]:
    return type(
        FlowMatchingDensity.__name__, (FlowMatchingDensity,), {"_network": network}
    )


# name: (estimator class, hidden_layer_sizes of d or None, costs of d)
NETWORKS = {
    "default 4x256 + Fourier": (FlowMatchingDensity, None, default_costs),
    "bilinear-trace 2x512": (
        _estimator(BilinearTraceField),
        lambda d: (512, 512),
        lambda d: bilinear_costs(d, (512, 512)),
    ),
    "bilinear-trace 2x256": (
        _estimator(BilinearTraceField),
        lambda d: (256, 256),
        lambda d: bilinear_costs(d, (256, 256)),
    ),
    "HollowNet (FLOP-matched)": (
        _estimator(HollowField),
        lambda d: (hollow_width(d),) * 2,
        lambda d: hollow_costs(d, (hollow_width(d),) * 2),
    ),
    "bilinear-trace 2x512 + skip": (
        _estimator(BilinearTraceSkipField),
        lambda d: (512, 512),
        lambda d: bilinear_costs(d, (512, 512), skip=True),
    ),
    # skflow's field, added later (run on three of the sets): the HollowNet
    # above plus A(t) x, exact held-out scores (benchmarks/studies/hollow_field.py).
    'architecture="hollow"': (
        partial(FlowMatchingDensity, architecture="hollow"),
        None,
        lambda d: skflow_hollow_costs(d, (hollow_width(d),) * 2),
    ),
}


def _known(density):
    def split(seed):
        train, test = density.sample(N_TRAIN, seed), density.sample(N_TEST, 1000 + seed)
        return train, test, density.log_prob(test)

    return split


def _real(X):
    def split(seed):
        train, test = train_test_split(X, test_size=0.2, random_state=seed)
        return train, test, None

    return split


# name: (split of a seed -> (train, test, true log p of test or None), n_features)
SETS = {
    "10-D mixture": (_known(KNOWN_DENSITIES["10-D mixture"]), 10),
    "mixture (16-D)": (_known(mixture(16, seed=0)), 16),
    "mixture (64-D)": (_known(mixture(64, seed=0)), 64),
    "breast_cancer": (_real(load_breast_cancer().data), 30),
    "digits": (_real(load_digits().data), 64),
}


def _jacobians(field: nn.Module, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dv/dx at each row of x (n, d, d), by autograd, one row at a time."""
    jacobians = []
    for i, row in enumerate(x):
        time = t if t.ndim == 0 else t[i : i + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda point, time=time: field(time, point.unsqueeze(0))[0], row
        )
        jacobians.append(jacobian)
    return torch.stack(jacobians)


def check_divergences(n_rows: int = 7, tolerance: float = 1e-10) -> list[dict]:
    """Closed-form divergence (exact and Hutchinson) against autograd, float64."""
    rows = []
    cases = [
        (BilinearTraceField, 10, (48, 40)),
        (BilinearTraceSkipField, 16, (32, 24)),
        (HollowField, 10, (6, 5)),
        (HollowField, 17, (4, 3)),
    ]
    for network, d, widths in cases:
        torch.manual_seed(d)
        field = network(d, widths).double()
        with torch.no_grad():  # move every weight (biases, skip) off its init
            for parameter in field.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
        x = 1.5 * torch.randn(n_rows, d, dtype=torch.float64)
        probes = torch.randn(n_rows, 3, d, dtype=torch.float64)
        for t in (torch.tensor(0.3, dtype=torch.float64), torch.rand(n_rows).double()):
            jacobians = _jacobians(field, t, x)
            trace = jacobians.diagonal(dim1=-2, dim2=-1).sum(-1)
            quadratic = torch.einsum("npi,nij,npj->np", probes, jacobians, probes)
            velocity, divergence = field.velocity_and_divergence(t, x, None, {})
            _, estimate = field.velocity_and_divergence(t, x, probes)
            errors = {
                "velocity": (velocity - field(t, x)).abs().max().item(),
                "exact trace": (divergence - trace).abs().max().item(),
                "Hutchinson": (estimate - quadratic.mean(-1)).abs().max().item(),
            }
            rows.append(
                {
                    "network": network.__name__,
                    "n_features": d,
                    "widths": list(widths),
                    "time": "scalar" if t.ndim == 0 else "per row",
                    "max_trace": trace.abs().max().item(),
                    **{f"error ({k})": v for k, v in errors.items()},
                }
            )
            print(rows[-1], flush=True)
            assert max(errors.values()) < tolerance, rows[-1]
    return rows


def run_one(set_name: str, network_name: str, seed: int) -> dict:
    warnings.simplefilter("ignore")
    split, d = SETS[set_name]
    estimator, widths, costs = NETWORKS[network_name]
    params = {} if widths is None else {"hidden_layer_sizes": widths(d)}
    train, test, log_p = split(seed)
    print(f"{set_name} / {network_name} / seed {seed}", flush=True)
    model = estimator(random_state=seed, **params).fit(train)
    with skflow.solver_stats() as stats:
        log_q = model.score_samples(test)
    forward, with_divergence = costs(d)
    unit = default_costs(d)[0]
    plain = stats.n_evaluations - stats.n_divergence_evaluations
    scoring = (plain * forward + stats.n_divergence_evaluations * with_divergence) / (
        stats.n_chunks * unit
    )
    scores = model.validation_scores_
    result = {
        "set": set_name,
        "network": network_name,
        "seed": seed,
        "n_features": d,
        "kind": "kl" if log_p is not None else "loglik",
        "metric": float(
            np.mean(log_p - log_q) if log_p is not None else np.mean(log_q)
        ),
        "n_parameters": sum(p.numel() for p in model.vector_field_.parameters()),
        "hidden_layer_sizes": list(model.vector_field_.hidden_layer_sizes),
        "n_iter": model.n_iter_,
        "n_validation_checks": len(scores),
        "best_check": int(np.argmax(scores)) + 1 if scores else None,
        "final_loss": float(np.mean(model.loss_curve_[-200:])),
        "forward_cost": forward / unit,
        "divergence_cost": with_divergence / unit,
        "evaluations_per_chunk": stats.n_evaluations / stats.n_chunks,
        "divergence_evaluations_per_chunk": stats.n_divergence_evaluations
        / stats.n_chunks,
        "scoring_cost_per_row": scoring,
        "n_nonfinite": int(np.sum(~np.isfinite(log_q))),
    }
    print(result, flush=True)
    return result


def markdown(results: dict) -> list[str]:
    runs = results["runs"]
    networks = [n for n in NETWORKS if any(r["network"] == n for r in runs)]
    sets = [s for s in SETS if any(r["set"] == s for r in runs)]
    lines = [
        "# Networks with a cheap exact divergence (issue 18)",
        "",
        environment_line(results),
        "",
        "Same training for every network (`FlowMatchingDensity()` defaults, "
        '`max_iter="auto"`, early stopping); only the network class and its '
        "widths change. 10,000 training rows and 5,000 test rows for the "
        "mixtures (test KL(p || q) in nats, lower is better); 80/20 split for "
        "breast_cancer and digits (mean test log-likelihood, higher is "
        "better). One row per seed, then their mean. HollowNet's k units per "
        "coordinate are chosen per d (the widths column).",
        "",
        "## Divergence checks (float64, against autograd's exact trace)",
        "",
        "| network | d | widths | time | max abs error: velocity / exact "
        "trace / Hutchinson | max abs trace |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["checks"]:
        lines.append(
            f"| {row['network']} | {row['n_features']} | {row['widths']} | "
            f"{row['time']} | {row['error (velocity)']:.1e} / "
            f"{row['error (exact trace)']:.1e} / {row['error (Hutchinson)']:.1e} "
            f"| {row['max_trace']:.2f} |"
        )
    lines += [
        "",
        "## Density quality",
        "",
        "| set | metric | " + " | ".join(networks) + " |",
        "|---|---|" + "---|" * len(networks),
    ]
    for set_name in sets:
        seeds = sorted({r["seed"] for r in runs if r["set"] == set_name})
        kind = next(r["kind"] for r in runs if r["set"] == set_name)
        metric = "test KL" if kind == "kl" else "test log-lik"
        for seed in [*seeds, "mean"]:
            cells = []
            for network in networks:
                match = [
                    r["metric"]
                    for r in runs
                    if (r["set"], r["network"]) == (set_name, network)
                    and seed in (r["seed"], "mean")
                ]
                cells.append(f"{np.mean(match):.3f}" if match else "")
            label = f"seed {seed}" if seed != "mean" else f"**mean of {len(seeds)}**"
            lines.append(
                f"| {set_name} ({label}) | {metric} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "## Cost and training",
        "",
        "Costs in forward passes of the default network at the same d "
        "(multiply-adds counted analytically): a forward pass, one with the "
        "exact divergence, and scoring one test row (the solver's "
        "evaluations per chunk, velocity-only and with divergence, times "
        "their costs; seed 0). Parameters, and the training's steps and "
        "early stopping (the held-out check kept, of those run), per seed.",
        "",
        "| set | network | widths | parameters | forward | with divergence | "
        "evaluations (with div.) | scoring / row | steps | best check / checks "
        "| final loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for set_name in sets:
        for network in networks:
            cell = [r for r in runs if (r["set"], r["network"]) == (set_name, network)]
            if not cell:
                continue
            cell.sort(key=lambda r: r["seed"])
            first = cell[0]
            join = " / ".join

            def checks(run):
                return f"{run['best_check']}/{run['n_validation_checks']}"

            lines.append(
                f"| {set_name} | {network} | {first['hidden_layer_sizes']} | "
                f"{first['n_parameters']:,} | "
                f"{first['forward_cost']:.2f} | {first['divergence_cost']:.2f} | "
                f"{first['evaluations_per_chunk']:.0f} "
                f"({first['divergence_evaluations_per_chunk']:.0f}) | "
                f"{first['scoring_cost_per_row']:.0f} | "
                f"{join(str(r['n_iter']) for r in cell)} | "
                f"{join(checks(r) for r in cell)}"
                f" | {join(format(r['final_loss'], '.3f') for r in cell)} |"
            )
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="only the checks")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--shard", type=shard, default=(0, 1))
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    checks = check_divergences()
    if args.check:
        return
    if args.report:
        results = environment(__spec__.name)
        results["checks"] = checks
        results["runs"] = read_runs(args.runs)
        write_results("cheap_divergence", results, markdown(results))
        return
    jobs = [
        (set_name, network, seed)
        for seed in args.seeds
        for set_name in args.sets
        for network in args.networks
    ]
    run_shard(jobs, args.shard, run_one, args.runs, ("set", "network", "seed"))


if __name__ == "__main__":
    main()
