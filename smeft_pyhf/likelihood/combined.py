"""The combined SMEFT likelihood: SMEFiT datasets + measurement cards, in torch.

:func:`build_likelihood` stacks the predictions of all SMEFiT datasets and cards into one
:class:`~smeft_pyhf.likelihood.predictions.QuadraticPredictions` and their covariances into one
block matrix (SMEFiT sets among themselves as SMEFiT builds it, cards among themselves with the
SFitter ``rho`` correlations, no correlation between the two groups), so the hot path is one
prediction (two ``addmm``) and one triangular solve.

Theory uncertainties:

* SMEFiT datasets come with a Gaussian theory covariance (``theory_cov_current``); it stays
  Gaussian (added to the covariance when ``use_theory_cov``);
* the cards' flat theory categories follow ``theory_mode``: ``"gaussian"`` (sigma = half-width,
  correlated across cards of the same process), ``"profiled"`` (SFitter, residual shifted towards
  the data by up to the summed half-width), ``"marginalised"`` (Gaussian convolved with a box) or
  ``"nuisance"`` (one flat parameter in ``[-1, 1]`` per process and category, appended to the
  coefficients, named ``theta_<process>_<category>``).

Example:
    >>> lik = build_likelihood(database="../shared/data/smefit_database",      # doctest: +SKIP
    ...                        datasets=["ATLAS_t_sch_13TeV_inc"], coefficients=["ctW"])
    >>> lik.chi2(torch.zeros(1, 1, dtype=torch.float64))                      # doctest: +SKIP
    tensor([0.6590], dtype=torch.float64)
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from scipy.linalg import block_diag
from torch import Tensor, nn

from smeft_pyhf.exceptions import ConfigError, DataError
from smeft_pyhf.formats.card import MeasurementCard
from smeft_pyhf.formats.coefficients import CoefficientSpec, coefficient_name
from smeft_pyhf.likelihood.cards import (
    card_covariance,
    card_theory_shifts,
    card_theory_widths,
    read_cards,
)
from smeft_pyhf.likelihood.gaussian import GaussianTerm
from smeft_pyhf.likelihood.predictions import (
    QuadraticPredictions,
    tables_to_arrays,
)
from smeft_pyhf.likelihood.smefit_data import (
    SmefitDataset,
    combined_covariance,
    load_smefit_dataset,
)
from smeft_pyhf.likelihood.smefit_runcard import SmefitSelection, substitution_matrix

__all__ = [
    "CombinedLikelihood",
    "GaussianBlock",
    "LinearSolution",
    "build_likelihood",
    "linear_gaussian_solution",
]

log = logging.getLogger(__name__)

TheoryTreatment = Literal["gaussian", "profiled", "marginalised", "nuisance"]
PredictionKind = Literal["additive", "multiplicative"]


class GaussianBlock(nn.Module):
    """Predictions plus a :class:`GaussianTerm`: ``log_prob(x) = -chi2(T(c), theta) / 2``.

    ``x`` holds the ``n`` coefficients followed by the ``K`` theory nuisance parameters.

    Example:
        >>> import torch
        >>> pred = QuadraticPredictions(torch.zeros(1), torch.ones(1, 1), None, ["ca"])
        >>> block = GaussianBlock(pred, GaussianTerm(torch.ones(1), torch.eye(1)))
        >>> block.log_prob(torch.tensor([[1.0], [0.0]]))
        tensor([-0.0000, -0.5000])
    """

    def __init__(self, predictions: QuadraticPredictions, term: GaussianTerm) -> None:
        super().__init__()
        if predictions.n_observables != term.n_data:
            raise ConfigError(f"{predictions.n_observables} predictions for {term.n_data} data")
        self.predictions = predictions
        self.term = term

    @property
    def n_data(self) -> int:
        """Number of measurements."""
        return self.term.n_data

    def chi2(self, x: Tensor, data: Tensor | None = None) -> Tensor:
        """``-2 log L`` (up to a constant), ``(B,)``."""
        n = len(self.predictions.names)
        theta = x[..., n:] if self.term.n_nuisances else None
        return self.term.chi2(self.predictions(x[..., :n]), theta, data)

    def log_prob(self, x: Tensor, data: Tensor | None = None) -> Tensor:
        """``log L = -chi2 / 2``, ``(B,)``."""
        return -0.5 * self.chi2(x, data)

    def expected(self, x: Tensor) -> Tensor:
        """Predicted values (theory nuisances applied), ``(B, N)``."""
        n = len(self.predictions.names)
        pred = self.predictions(x[..., :n])
        if self.term.n_nuisances:
            pred = pred + x[..., n:] @ self.term.theory_shifts.T
        return pred


class CombinedLikelihood(nn.Module):
    """Sum of likelihood terms sharing the parameter vector ``x = (c, theta)``.

    Args:
        terms: modules with ``log_prob(x: (B, d)) -> (B,)`` (e.g. :class:`GaussianBlock`; the
            Poisson terms of ``likelihood/poisson.py`` fit in as well).
        names: the ``d`` parameter names (coefficients ``cX``, then nuisances ``theta_*``).
        n_coefficients: how many of ``names`` are Wilson coefficients.
        bounds: ``(d, 2)`` prior ranges (``None``: +-inf for coefficients, [-1, 1] for nuisances).
        observables: names of the measurements, in the order of :meth:`expected`.

    Example:
        >>> import torch
        >>> pred = QuadraticPredictions(torch.zeros(1), torch.ones(1, 1), None, ["ca"])
        >>> lik = CombinedLikelihood([GaussianBlock(pred, GaussianTerm(torch.ones(1), torch.eye(1)))],
        ...                          names=("ca",))
        >>> lik.chi2(torch.tensor([[0.0]]))
        tensor([1.])
    """

    def __init__(self, terms: Sequence[nn.Module], names: Sequence[str], *,
                 n_coefficients: int | None = None, bounds: np.ndarray | None = None,
                 observables: Sequence[str] = ()) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.names: tuple[str, ...] = tuple(names)
        self.n_coefficients = len(self.names) if n_coefficients is None else n_coefficients
        if bounds is None:
            bounds = np.array([[-np.inf, np.inf]] * self.n_coefficients
                              + [[-1.0, 1.0]] * (len(self.names) - self.n_coefficients))
        self.bounds = np.asarray(bounds, dtype=float).reshape(len(self.names), 2)
        self.observables: tuple[str, ...] = tuple(observables)

    @property
    def coefficient_names(self) -> tuple[str, ...]:
        """Names of the Wilson coefficients (``cX``)."""
        return self.names[: self.n_coefficients]

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        """Names of the explicit theory nuisance parameters."""
        return self.names[self.n_coefficients:]

    @property
    def dim(self) -> int:
        """Number of parameters ``d``."""
        return len(self.names)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the buffers."""
        for buf in self.buffers():
            if buf.is_floating_point():
                return buf.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        """Device of the buffers."""
        for buf in self.buffers():
            return buf.device
        return torch.device("cpu")

    @property
    def observed(self) -> Tensor:
        """Concatenated data of the Gaussian blocks."""
        return torch.cat([t.term.data for t in self.terms if isinstance(t, GaussianBlock)])

    def _check(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ConfigError(f"expected {self.dim} parameters {self.names}, got "
                              f"{x.shape[-1]}")
        return x

    def log_prob(self, x: Tensor, data: Tensor | None = None) -> Tensor:
        """``log L = -chi2 / 2`` (up to a constant) for ``x (B, d)`` (or ``(d,)``).

        Args:
            x: parameter points, same dtype/device as the module.
            data: replaces the observed data of the Gaussian blocks (concatenated).
        """
        x = self._check(x)
        out: Tensor | None = None
        start = 0
        for term in self.terms:
            if isinstance(term, GaussianBlock):
                block = None if data is None else data[start:start + term.n_data]
                start += term.n_data
                value = term.log_prob(x, block)
            else:
                value = term.log_prob(x)
            out = value if out is None else out + value
        if out is None:
            return x.new_zeros(x.shape[:-1])
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def chi2(self, x: Tensor, data: Tensor | None = None) -> Tensor:
        """``-2 log L`` (up to a constant), ``(B,)``."""
        return -2.0 * self.log_prob(x, data)

    def expected(self, x: Tensor) -> Tensor:
        """Predictions of all Gaussian measurements, ``(B, N)``."""
        x = self._check(x)
        return torch.cat([t.expected(x) for t in self.terms if isinstance(t, GaussianBlock)], -1)

    def extra_repr(self) -> str:
        return f"n_coefficients={self.n_coefficients}, n_nuisances={len(self.nuisance_names)}"


class LinearSolution(NamedTuple):
    """Closed-form Gaussian fit of a linear model.

    Attributes:
        best_fit: ``(n,)`` maximum-likelihood coefficients.
        covariance: ``(n, n)`` their covariance (inverse Hessian of ``-log L``).
        chi2_min: ``chi2`` at the best fit.
        names: coefficient names.
    """

    best_fit: np.ndarray
    covariance: np.ndarray
    chi2_min: float
    names: tuple[str, ...]

    @property
    def errors(self) -> np.ndarray:
        """1-sigma uncertainties ``sqrt(diag(covariance))``."""
        return np.sqrt(np.diag(self.covariance))


def linear_gaussian_solution(likelihood: CombinedLikelihood) -> LinearSolution:
    """Solve the normal equations of a linear, purely Gaussian likelihood.

    ``chi2(c) = (d - s - L c)^T V^-1 (d - s - L c)`` gives
    ``c_hat = (L^T V^-1 L)^-1 L^T V^-1 (d - s)`` and ``cov = (L^T V^-1 L)^-1``.

    Raises:
        ConfigError: when a term is not Gaussian-linear (quadratic predictions not switched off,
            flat theory treatment, nuisance parameters or non-Gaussian terms).

    Example:
        >>> import torch
        >>> pred = QuadraticPredictions(torch.zeros(2), torch.eye(2), None, ["ca", "cb"])
        >>> term = GaussianTerm(torch.tensor([1.0, 2.0]), torch.eye(2))
        >>> lik = CombinedLikelihood([GaussianBlock(pred, term)], names=("ca", "cb"))
        >>> linear_gaussian_solution(lik).best_fit.tolist()
        [1.0, 2.0]
    """
    n = likelihood.n_coefficients
    fisher = np.zeros((n, n))
    vector = np.zeros(n)
    const = 0.0
    for term in likelihood.terms:
        if not isinstance(term, GaussianBlock):
            raise ConfigError(f"term {type(term).__name__} is not a Gaussian block")
        pred, gauss = term.predictions, term.term
        if gauss.theory_mode != "none" and bool((gauss.theory_width > 0).any()):
            raise ConfigError("flat theory uncertainties make the likelihood non-Gaussian",
                              hint="use theory_mode='gaussian' for the analytic solution")
        if gauss.n_nuisances:
            raise ConfigError("theory nuisance parameters are not supported here")
        if not pred.linear_only and pred.n_pairs:
            raise ConfigError("the predictions have quadratic terms",
                              hint="build the likelihood with linear_only=True")
        lin = pred.linear.detach().double().cpu().numpy()
        resid = (gauss.data - pred.sm).detach().double().cpu().numpy()
        upper = gauss.scale_triu.detach().double().cpu().numpy()
        # whiten: w = L^-1 y with V = L L^T, L = upper^T
        lower = upper.T
        w_lin = np.linalg.solve(lower, lin)
        w_res = np.linalg.solve(lower, resid)
        fisher += w_lin.T @ w_lin
        vector += w_lin.T @ w_res
        const += float(w_res @ w_res)
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError as exc:
        raise DataError("the linear model is degenerate (singular Fisher matrix)",
                        hint="some coefficients are not constrained by the data") from exc
    best = cov @ vector
    chi2_min = const - float(vector @ best)
    return LinearSolution(best, cov, chi2_min, likelihood.coefficient_names)


def _coefficient_specs(coefficients: Any) -> dict[str, CoefficientSpec] | None:
    if coefficients is None:
        return None
    if isinstance(coefficients, SmefitSelection):
        return dict(coefficients.coefficients)
    if isinstance(coefficients, Mapping):
        out = {}
        for key, spec in coefficients.items():
            name = coefficient_name(str(key))
            out[name] = spec._replace(name=name) if isinstance(spec, CoefficientSpec) else \
                CoefficientSpec(name, *spec)
        return out
    if isinstance(coefficients, str):
        coefficients = [coefficients]
    return {coefficient_name(n): CoefficientSpec(coefficient_name(n)) for n in coefficients}


def _dataset_arrays(ds: SmefitDataset, names: Sequence[str], *,
                    kind: PredictionKind) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sm, lin, quad = tables_to_arrays(ds.best_sm, ds.linear, ds.quadratic, names,
                                     where=ds.sources[1])
    if kind == "multiplicative":
        if np.any(ds.sm_order == 0):
            raise DataError("SM entry is zero, cannot use the multiplicative prescription",
                            where=f"{ds.sources[1]}: {ds.order}.SM")
        factor = ds.best_sm / ds.sm_order
        lin = lin * factor[:, None]
        quad = quad * factor[:, None, None]
    return sm, lin, quad


def _predictions(arrays: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 names: Sequence[str], dtype: torch.dtype) -> QuadraticPredictions:
    sm, lin, quad = (np.concatenate(parts) for parts in zip(*arrays, strict=True))
    return QuadraticPredictions(torch.as_tensor(sm, dtype=dtype), torch.as_tensor(lin, dtype=dtype),
                                torch.as_tensor(quad, dtype=dtype), names)


def _check_build_options(theory_mode: str, prediction: str, scale_theory: float) -> None:
    """Reject an unknown ``theory_mode`` or ``prediction`` and a negative ``scale_theory``."""
    modes = ("gaussian", "profiled", "marginalised", "nuisance")
    if theory_mode not in modes:
        raise ConfigError(f"unknown theory_mode {theory_mode!r}", where="theory_mode",
                          hint=f"choose one of {list(modes)}")
    if prediction not in ("additive", "multiplicative"):
        raise ConfigError(f"unknown prediction {prediction!r}", where="prediction",
                          hint="choose 'additive' or 'multiplicative'")
    if scale_theory < 0:
        raise ConfigError(f"scale_theory must be >= 0, got {scale_theory}", where="scale_theory")


class _Coefficients(NamedTuple):
    """The coefficients of the tables and the substitution to the free ones."""

    table_names: tuple[str, ...]
    specs: dict[str, CoefficientSpec]
    free: tuple[str, ...]
    a_mat: np.ndarray
    b_vec: np.ndarray


def _select_coefficients(tables: Sequence[SmefitDataset], coefficients: Any) -> _Coefficients:
    """The coefficients of ``tables`` and the substitution ``c_table = A c_free + b`` of the
    selected ones (every coefficient of the tables, all free, when ``coefficients`` is None).

    Raises:
        ConfigError: a free coefficient in no table (with close names), or none free.
    """
    table_ops: set[str] = set()
    for ds in tables:
        table_ops.update(ds.operators)
    table_names = tuple(sorted(coefficient_name(o) for o in table_ops))
    specs = _coefficient_specs(coefficients)
    if specs is None:
        specs = {n: CoefficientSpec(n) for n in table_names}
    unknown = [n for n, s in specs.items() if s.is_free and n not in table_names]
    if unknown:
        close = {u: difflib.get_close_matches(u, table_names, n=3) for u in unknown}
        hint = "; ".join(f"{u}: did you mean {', '.join(c)}?" if c else f"{u}: no close name"
                         for u, c in close.items())
        raise ConfigError(f"unknown coefficients {unknown}: they appear in no theory table of "
                          f"the selected datasets", where="coefficients", hint=hint)
    free, a_mat, b_vec = substitution_matrix(table_names, specs)
    if not free:
        raise ConfigError("no free coefficient selected", where="coefficients")
    ignored = sorted(set(table_names) - set(specs))
    if ignored:
        log.debug("coefficients in the tables but not selected (set to 0): %s", ignored)
    return _Coefficients(table_names, specs, tuple(free), a_mat, b_vec)


def _dataset_covariance(loaded: Sequence[SmefitDataset], *, use_t0: bool, use_theory_cov: bool,
                        scale_theory: float, correlate_datasets: bool) -> np.ndarray:
    """The SMEFiT datasets' covariance (theory covariance times ``scale_theory**2``).

    Raises:
        DataError: the covariance is not positive definite (the dataset at fault named when
            one is).
    """
    cov = combined_covariance(loaded, use_t0=use_t0, use_theory_cov=False,
                              correlate_named=correlate_datasets, check=False)
    if use_theory_cov:
        cov = cov + scale_theory**2 * block_diag(*[ds.theory_cov for ds in loaded])
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        combined_covariance(loaded, use_t0=use_t0, use_theory_cov=use_theory_cov,
                            correlate_named=correlate_datasets, check=True)
        raise DataError("covariance is not positive definite (datasets: "
                        f"{', '.join(ds.name for ds in loaded)})",
                        where=", ".join(ds.sources[0] for ds in loaded)) from None
    return cov


def _card_arrays(card_list: Sequence[MeasurementCard], linked: Mapping[str, SmefitDataset],
                 table_names: Sequence[str], prediction: PredictionKind,
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each card's signal-strength prediction ``mu(c) = sum_bins T(c) / sum_bins best_sm``
    from its SMEFiT dataset's tables."""
    card_arrays = []
    for card in card_list:
        ds = linked[card.smefit_dataset]
        sm, lin, quad = _dataset_arrays(ds, table_names, kind=prediction)
        norm = ds.best_sm.sum()
        card_arrays.append((sm.sum(0, keepdims=True) / norm, lin.sum(0, keepdims=True) / norm,
                            quad.sum(0, keepdims=True) / norm))
    return card_arrays


def _card_theory(card_list: Sequence[MeasurementCard], n_datasets: int, theory_mode: str,
                 ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """The flat theory half-widths of all measurements (datasets first, zero for them), the
    theory nuisance names and their shifts of every measurement (``theory_mode="nuisance"``)."""
    widths = np.zeros(n_datasets)
    if not card_list:
        return widths, (), np.zeros((n_datasets, 0))
    card_widths = card_theory_widths(card_list) if theory_mode in (
        "profiled", "marginalised") else np.zeros(len(card_list))
    widths = np.concatenate([widths, card_widths])
    if theory_mode != "nuisance":
        return widths, (), np.zeros((len(widths), 0))
    nuisance_names, card_shifts = card_theory_shifts(card_list)
    shifts = np.vstack([np.zeros((n_datasets, card_shifts.shape[1])), card_shifts])
    return widths, nuisance_names, shifts


def _dataset_entries(datasets: Sequence[str | tuple[str, str]] | SmefitSelection, order: str,
                     card_list: Sequence[MeasurementCard]) -> list[tuple[str, str]]:
    """``(name, order)`` of the datasets to load: those of ``datasets`` that no card replaces."""
    if isinstance(datasets, SmefitSelection):
        entries: list[tuple[str, str]] = list(datasets.datasets)
    else:
        entries = [(d, order) if isinstance(d, str) else (str(d[0]), str(d[1]))
                   for d in datasets]
    replaced = {r for c in card_list for r in c.replaces}
    dropped = [name for name, _ in entries if name in replaced]
    if dropped:
        log.info("datasets replaced by cards: %s", ", ".join(dropped))
    return [(n, o) for n, o in entries if n not in replaced]


def build_likelihood(
    *,
    database: str | Path,
    datasets: Sequence[str | tuple[str, str]] | SmefitSelection = (),
    cards: Sequence[Any] = (),
    coefficients: Sequence[str] | Mapping[str, Any] | SmefitSelection | None = None,
    order: Literal["LO", "NLO_QCD"] = "NLO_QCD",
    linear_only: bool = False,
    rho: float = 0.99,
    theory_mode: TheoryTreatment = "gaussian",
    scale_theory: float = 1.0,
    use_t0: bool = True,
    use_theory_cov: bool = True,
    correlate_datasets: bool = True,
    prediction: PredictionKind = "additive",
    dtype: torch.dtype = torch.float64,
) -> CombinedLikelihood:
    """Build the combined likelihood of SMEFiT datasets and measurement cards.

    One function because it is the documented entry point (``smeft_pyhf.build_likelihood``):
    its length is the signature and this docstring; the body reads the inputs and stacks the
    datasets' and the cards' predictions, data and covariance blocks into one Gaussian term,
    each piece a helper (``read_cards``, ``_dataset_entries``, ``_select_coefficients``,
    ``_predictions``, ``_dataset_covariance``, ``_card_theory``, ``card_covariance``).

    Args:
        database: SMEFiT database folder (``commondata/``, ``theory/``).
        datasets: dataset names (or ``(name, order)`` pairs), or a :class:`SmefitSelection`
            (then its datasets and coefficients are used, the coefficients unless given
            explicitly; its ``use_quad: false`` means ``linear_only`` and leaves the quadratic
            tables unread).
        cards: measurement cards (paths, mappings or loaded cards). A card's
            ``prediction.replaces`` datasets are dropped from ``datasets``; they and its
            ``prediction.smefit_dataset`` must be datasets of ``database``.
        coefficients: coefficient names (all free), ``{name: CoefficientSpec}`` with fixed values
            and linear constraints, or a selection; ``None``: every coefficient in the tables.
        order: order of the EFT tables (``LO``/``NLO_QCD``) for plain dataset names.
        linear_only: drop the quadratic EFT terms of the predictions (they are read, and
            setting ``predictions.linear_only`` back to ``False`` restores them).
        rho: correlation of equal systematic categories between cards.
        theory_mode: treatment of the cards' flat theory uncertainties (see the module).
        scale_theory: factor on the cards' flat theory uncertainties *and* on the SMEFiT theory
            covariance (covariance times ``scale_theory**2``); 0.5 = "theory halved".
        use_t0: t0 prescription for SMEFiT ``MULT`` systematics.
        use_theory_cov: add the SMEFiT theory covariance.
        correlate_datasets: correlate SMEFiT systematics with the same special name across
            datasets (``False``: each dataset separately).
        prediction: ``"additive"`` (SMEFiT default) or ``"multiplicative"``.
        dtype: dtype of the module (float64 default; ``.to(torch.float32)`` later works too).

    Returns:
        A :class:`CombinedLikelihood` whose parameters are the free coefficients, then the
        theory nuisances (``theory_mode="nuisance"``).

    Raises:
        ConfigError: unknown coefficient (with close names), empty selection, bad option.
        DataError: missing dataset, broken file, non-positive-definite covariance, a card
            with an unknown category or whose prediction/replaced dataset is a path or not in
            the database (named with the card file and field).

    Example:
        >>> lik = build_likelihood(database="../shared/data/smefit_database",   # doctest: +SKIP
        ...                        datasets=["ATLAS_ttZ_13TeV_pTZ"], coefficients=["ctZ", "ctG"])
        >>> lik.names                                                           # doctest: +SKIP
        ('ctZ', 'ctG')
    """
    _check_build_options(theory_mode, prediction, scale_theory)
    read_quad = True
    if isinstance(datasets, SmefitSelection):
        if coefficients is None:
            coefficients = datasets
        read_quad = datasets.use_quad
    # each card's prediction and replaced datasets must be plain names present in the
    # database (a path would read a table outside it; an absent name replaces nothing)
    card_list: tuple[MeasurementCard, ...] = read_cards(cards, database=database)
    entries = _dataset_entries(datasets, order, card_list)
    if not entries and not card_list:
        raise ConfigError("no datasets and no cards selected", where="datasets")
    loaded = [load_smefit_dataset(database, n, order=o, use_quad=read_quad)  # type: ignore[arg-type]
              for n, o in entries]
    linked = {c.smefit_dataset: load_smefit_dataset(database, c.smefit_dataset, order=order,
                                                    use_quad=read_quad) for c in card_list}
    coefs = _select_coefficients((*loaded, *linked.values()), coefficients)
    table_names, free = coefs.table_names, coefs.free

    def convert(pred: QuadraticPredictions) -> QuadraticPredictions:
        return pred.substitute(torch.as_tensor(coefs.a_mat, dtype=dtype),
                               torch.as_tensor(coefs.b_vec, dtype=dtype), free)

    preds: list[QuadraticPredictions] = []
    data_parts: list[np.ndarray] = []
    observables: list[str] = []
    blocks: list[np.ndarray] = []
    if loaded:
        preds.append(convert(_predictions(
            [_dataset_arrays(ds, table_names, kind=prediction) for ds in loaded],
            table_names, dtype)))
        data_parts.extend(ds.data_central for ds in loaded)
        observables.extend(f"{ds.name}[{i}]" for ds in loaded for i in range(ds.n_data))
        blocks.append(_dataset_covariance(
            loaded, use_t0=use_t0, use_theory_cov=use_theory_cov, scale_theory=scale_theory,
            correlate_datasets=correlate_datasets))
    widths, nuisance_names, shifts = _card_theory(
        card_list, sum(len(d) for d in data_parts), theory_mode)
    if card_list:
        preds.append(convert(_predictions(
            _card_arrays(card_list, linked, table_names, prediction), table_names, dtype)))
        data_parts.append(np.array([c.best_fit for c in card_list]))
        observables.extend(c.name for c in card_list)
        blocks.append(card_covariance(card_list, rho=rho,
                                      theory_as_gaussian=theory_mode == "gaussian",
                                      theory_scale=scale_theory))
    term = GaussianTerm(
        torch.as_tensor(np.concatenate(data_parts), dtype=dtype),
        torch.as_tensor(block_diag(*blocks), dtype=dtype),
        theory_width=torch.as_tensor(widths, dtype=dtype),
        theory_mode=theory_mode if theory_mode in ("profiled", "marginalised") else "none",
        theory_shifts=torch.as_tensor(shifts, dtype=dtype),
        scale_theory=1.0 if theory_mode == "gaussian" else scale_theory,
        names=tuple(observables))
    pred_all = QuadraticPredictions.stack(preds)
    pred_all.linear_only = linear_only or not read_quad
    bounds = np.array([list(coefs.specs[n].bounds) for n in free]
                      + [[-1.0, 1.0]] * len(nuisance_names))
    log.info("likelihood: %d datasets, %d cards, %d measurements, %d coefficients, "
             "%d theory nuisances", len(loaded), len(card_list), term.n_data, len(free),
             len(nuisance_names))
    return CombinedLikelihood([GaussianBlock(pred_all, term)], (*free, *nuisance_names),
                              n_coefficients=len(free), bounds=bounds, observables=observables)
