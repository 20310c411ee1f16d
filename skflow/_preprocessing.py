"""Standardization with its Jacobian, integer columns, atoms and dequantization.

The flow sees ``z = (x - mean) / scale``; every log density it returns is
moved back to the caller's units by ``log_jacobian(scale)``. Columns of
whole numbers are modelled as x + u, u ~ U[0, 1) (dequantization): noise is
added when training and scoring, and samples are rounded down. The outlier
detector also spreads the atoms of other columns (a value that many rows
share) over a cell around them (:func:`find_atoms`, :func:`dequantized`).
"""

from __future__ import annotations

import warnings

import numpy as np

from ._row_noise import row_uniforms

__all__ = [
    "check_sample_weight",
    "fit_standardization",
    "at_atoms",
    "dequantized",
    "find_atoms",
    "integer_columns",
    "log_jacobian",
    "spread_atoms",
    "standardize",
    "to_data_units",
]


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray:
    """Validate weights in skflow itself: float64, (n_samples,), finite, >= 0.

    scikit-learn's private ``_check_sample_weight`` changed its checks between
    versions (an all-zero vector passes some of them); these are the same on
    every version skflow supports.
    """
    if sample_weight is None:
        return np.ones(n_samples)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.ndim == 0:
        return np.full(n_samples, float(weights))
    if weights.shape != (n_samples,):
        raise ValueError(
            f"sample_weight.shape == {weights.shape}, expected ({n_samples},)!"
        )
    if np.isnan(weights).any():
        raise ValueError("Input sample_weight contains NaN.")
    if np.isinf(weights).any():
        raise ValueError("Input sample_weight contains infinity.")
    if np.any(weights < 0):
        raise ValueError("Negative values in data passed to `sample_weight`.")
    if not np.any(weights > 0):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return weights


def integer_columns(X: np.ndarray) -> np.ndarray:
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


def standardize(
    X: np.ndarray,
    sample_weight: np.ndarray,
    dequantize: np.ndarray,
    block_rows: int = 2**16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations; 1 for constant columns.

    Returns the means, the scales and the mask of constant columns. Columns
    in the ``dequantize`` mask are standardized as X + U, U ~ U[0, 1): their
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
    mean = mean + 0.5 * dequantize
    variance = variance + dequantize / 12.0
    scale = np.sqrt(variance)
    # As StandardScaler: a column constant up to round-off is left unscaled.
    constant = (scale < 10 * np.finfo(scale.dtype).eps * np.abs(mean)) | (scale == 0)
    scale[constant] = 1.0
    return mean, scale, constant


def fit_standardization(
    X: np.ndarray,
    sample_weight: np.ndarray,
    *,
    dequantize: bool,
    sigma: float,
    name: str = "X",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The columns' means and scales, and the mask of discrete columns.

    Raises a ValueError where a mean or variance overflows float64, and
    warns of constant columns (the model puts a spike of width about
    ``sigma`` there); ``name`` names the data in the messages.
    """
    discrete = integer_columns(X) if dequantize else np.zeros(X.shape[1], bool)
    with np.errstate(over="ignore", invalid="ignore"):
        mean, scale, constant = standardize(X, sample_weight, discrete)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
        raise ValueError(
            f"{name} has values too large to standardize: a column's mean or "
            f"variance overflows float64. Rescale {name} (e.g. divide it by "
            "its largest absolute value)."
        )
    if constant.any():
        warnings.warn(
            f"Feature(s) {np.flatnonzero(constant).tolist()} are constant "
            f"in {name}: the model puts a spike of width about sigma "
            f"({sigma:g}, in their units) there, so log densities "
            "are large and depend on sigma. Drop constant features that "
            "carry no information.",
            UserWarning,
            stacklevel=5,  # here, _fit, fit, _fit_context, the caller
        )
    return mean, scale, discrete


def log_jacobian(scale: np.ndarray) -> float:
    """log |dz/dx| of z = (x - mean) / scale: add it to log p(z)."""
    return -float(np.sum(np.log(scale)))


def find_atoms(
    X: np.ndarray,
    sample_weight: np.ndarray,
    skip: np.ndarray,
    min_share: float,
    max_atoms: int,
) -> np.ndarray:
    """The atoms of X: values that carry at least ``min_share`` of the
    weight of their column, in a continuous column with a few such values.

    A column whose values are few (at most 1 / ``min_share``), or that has
    more than ``max_atoms`` atoms, or less than ``min_share`` of its weight
    off them, is one of levels (coded, or rounded as measurements are):
    every row sits on a spike there, so none is favoured over the others,
    and it gets no atoms. Columns in the ``skip`` mask (the integer ones,
    dequantized already) are not searched. Returns an array of shape
    (n_features, k): row j holds column j's atoms, padded with NaN (k is
    the most atoms of one column, 0 where no column has any).
    """
    total = sample_weight.sum()
    found = []
    for column, skipped in zip(X.T, skip, strict=True):
        if skipped:
            found.append(np.empty(0))
            continue
        values, index = np.unique(column, return_inverse=True)
        weight = np.bincount(index, weights=sample_weight, minlength=len(values))
        is_atom = weight >= min_share * total
        continuous = (
            len(values) > 1 / min_share
            and is_atom.sum() <= max_atoms
            and weight[~is_atom].sum() >= min_share * total
        )
        found.append(values[is_atom] if continuous else [])
    atoms = np.full((X.shape[1], max(map(len, found), default=0)), np.nan)
    for row, values in zip(atoms, found, strict=True):
        row[: len(values)] = values
    return atoms


def at_atoms(X: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Mask of the entries of X that equal an atom of their column.

    Compared in float32, so data scored as float32 find the atoms of a fit
    on the same data as float64.
    """
    mask = np.zeros(X.shape, dtype=bool)
    for j, values in enumerate(atoms):
        values = values[~np.isnan(values)]
        if len(values):
            column = X[:, j].astype(np.float32)
            mask[:, j] = np.isin(column, values.astype(np.float32))
    return mask


def dequantized(
    X: np.ndarray,
    integer_columns: np.ndarray | None,
    seed: int,
    rows: np.ndarray | None = None,
    atoms: np.ndarray | None = None,
    atom_widths: np.ndarray | None = None,
) -> np.ndarray:
    """X with U[0, 1) noise added to its integer columns, and each entry at
    one of the ``atoms`` (from :func:`find_atoms`) moved to a uniform draw
    within half its column's ``atom_widths`` of it.

    Row i's noise is drawn from the values of ``rows[i]`` (default: X, a
    conditional model passes its rows [y, x]) and ``seed``
    (:func:`~skflow._row_noise.row_uniforms`), so it depends on that row
    alone, not on the other rows of the call or on the mask. A column is an
    integer one or has atoms, never both, so the two share its draw.
    """
    has_integers = integer_columns is not None and integer_columns.any()
    has_atoms = atoms is not None and not np.isnan(atoms).all()
    if not (has_integers or has_atoms):
        return X
    uniforms = row_uniforms(X if rows is None else rows, seed, X.shape[1])
    out = spread_atoms(X, atoms, atom_widths, uniforms) if has_atoms else X
    return out + integer_columns * uniforms if has_integers else out


def spread_atoms(
    X: np.ndarray, atoms: np.ndarray, widths: np.ndarray, uniforms: np.ndarray
) -> np.ndarray:
    """X with each entry at one of its column's ``atoms`` moved to
    atom + (u - 1/2) width, u from ``uniforms`` (an array of X's shape)."""
    return X + at_atoms(X, atoms) * (uniforms - 0.5) * widths


def to_data_units(
    Z: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    integer_columns: np.ndarray | None,
) -> np.ndarray:
    """Undo the standardization; round the integer columns down.

    The discrete model puts the mass of [k, k + 1) on k.
    """
    X = Z * scale + mean
    if integer_columns is not None and integer_columns.any():
        X[:, integer_columns] = np.floor(X[:, integer_columns])
    return X
