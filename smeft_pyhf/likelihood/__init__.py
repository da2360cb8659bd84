"""The combined SMEFT likelihood in torch.

SMEFiT datasets (:mod:`.smefit_data`, :mod:`.smefit_runcard`), quadratic predictions
(:mod:`.predictions`), Gaussian measurements with flat theory uncertainties (:mod:`.gaussian`),
measurement cards (:mod:`.cards`), their combination (:mod:`.combined`) and a pyhf-compatible
model (:mod:`.pyhf_model`).

Example:
    >>> from smeft_pyhf.likelihood import build_likelihood
    >>> lik = build_likelihood(database="../shared/data/smefit_database",   # doctest: +SKIP
    ...                        datasets=["ATLAS_ttZ_13TeV_pTZ"], coefficients=["ctZ"])
"""

from smeft_pyhf.likelihood.cards import (
    card_covariance,
    card_theory_shifts,
    card_theory_widths,
    read_card,
    read_cards,
)
from smeft_pyhf.likelihood.combined import (
    CombinedLikelihood,
    GaussianBlock,
    LinearSolution,
    build_likelihood,
    linear_gaussian_solution,
)
from smeft_pyhf.likelihood.gaussian import GaussianTerm, box_residual, profiled_residual
from smeft_pyhf.likelihood.predictions import (
    QuadraticPredictions,
)
from smeft_pyhf.likelihood.pyhf_model import PyhfCompatibleConfig, PyhfCompatibleModel
from smeft_pyhf.likelihood.smefit_data import (
    SmefitDataset,
    available_datasets,
    available_orders,
    combined_covariance,
    dataset_covariance,
    load_smefit_dataset,
    load_smefit_datasets,
    top_quark_datasets,
)
from smeft_pyhf.likelihood.smefit_runcard import (
    SmefitSelection,
    read_smefit_runcard,
    substitution_matrix,
)

__all__ = [
    "CombinedLikelihood",
    "GaussianBlock",
    "GaussianTerm",
    "LinearSolution",
    "PyhfCompatibleConfig",
    "PyhfCompatibleModel",
    "QuadraticPredictions",
    "SmefitDataset",
    "SmefitSelection",
    "available_datasets",
    "available_orders",
    "box_residual",
    "build_likelihood",
    "card_covariance",
    "card_theory_shifts",
    "card_theory_widths",
    "combined_covariance",
    "dataset_covariance",
    "linear_gaussian_solution",
    "load_smefit_dataset",
    "load_smefit_datasets",
    "profiled_residual",
    "read_card",
    "read_cards",
    "read_smefit_runcard",
    "substitution_matrix",
    "top_quark_datasets",
]
