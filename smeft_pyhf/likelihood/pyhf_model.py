"""A pyhf-compatible model around :class:`~smeft_pyhf.likelihood.combined.CombinedLikelihood`.

``pyhf.infer.mle.fit(data, model)`` (pyhf 0.7.6, NumPy backend) only needs, from the model:
``config.npars``, ``config.par_names`` (a fresh list: the optimizer edits it in place),
``config.suggested_init()``, ``config.suggested_bounds()``, ``config.suggested_fixed()`` and
``logpdf(pars, data) -> array of shape (1,)``; ``fixed_poi_fit`` also reads ``config.poi_index``.
The scipy optimizer calls ``logpdf`` without gradients (``do_grad=False`` on NumPy); Minuit does
the same and computes Hesse numerically. The likelihood is evaluated in float64 through torch on
the module's device. ``data`` is the vector of the Gaussian measurements (no auxiliary data):
``model.data`` (observed) or toys with the same layout.

Example:
    >>> import pyhf, torch
    >>> from smeft_pyhf.likelihood.combined import CombinedLikelihood, GaussianBlock
    >>> from smeft_pyhf.likelihood.gaussian import GaussianTerm
    >>> from smeft_pyhf.likelihood.predictions import QuadraticPredictions
    >>> pred = QuadraticPredictions(torch.zeros(1), torch.ones(1, 1), None, ["ctG"])
    >>> lik = CombinedLikelihood([GaussianBlock(pred, GaussianTerm(torch.ones(1), torch.eye(1)))],
    ...                          names=("ctG",), bounds=[[-5.0, 5.0]])
    >>> model = PyhfCompatibleModel(lik)
    >>> pyhf.set_backend("numpy")
    >>> pyhf.infer.mle.fit(model.data, model).round(6)
    array([1.])
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.likelihood.combined import CombinedLikelihood

__all__ = ["PyhfCompatibleConfig", "PyhfCompatibleModel"]

log = logging.getLogger(__name__)


class PyhfCompatibleConfig:
    """The ``model.config`` part of the pyhf interface.

    Args:
        names: parameter names.
        init: initial values.
        bounds: ``(npars, 2)`` bounds.
        fixed: fixed flags.
        poi: name of the parameter of interest (``None``: no POI).
    """

    def __init__(self, names: Sequence[str], init: Sequence[float],
                 bounds: Sequence[Sequence[float]], fixed: Sequence[bool],
                 poi: str | None) -> None:
        self._names = list(names)
        self._init = [float(v) for v in init]
        self._bounds = [(float(lo), float(hi)) for lo, hi in bounds]
        self._fixed = [bool(f) for f in fixed]
        self.poi_name: str | None = None
        self.poi_index: int | None = None
        if poi is not None:
            self.set_poi(poi)

    @property
    def par_names(self) -> list[str]:
        """Parameter names (a new list every call)."""
        return list(self._names)

    @property
    def parameters(self) -> list[str]:
        """Same as :attr:`par_names` (pyhf's ``config.parameters``)."""
        return list(self._names)

    @property
    def npars(self) -> int:
        """Number of parameters."""
        return len(self._names)

    @property
    def par_order(self) -> list[str]:
        """Parameter order (each parameter is a scalar here)."""
        return list(self._names)

    @property
    def auxdata(self) -> list[float]:
        """No auxiliary data: all constraints live in the Gaussian covariance."""
        return []

    def set_poi(self, name: str | None) -> None:
        """Choose the parameter of interest."""
        if name is None:
            self.poi_name = self.poi_index = None
            return
        if name not in self._names:
            raise ConfigError(f"unknown POI {name!r}", where="poi", hint=f"one of {self._names}")
        self.poi_name = name
        self.poi_index = self._names.index(name)

    def par_slice(self, name: str) -> slice:
        """Slice of parameter ``name`` in the parameter vector."""
        k = self._names.index(name)
        return slice(k, k + 1)

    def param_set(self, name: str) -> object:
        """Minimal paramset-like object (``n_parameters``, ``suggested_bounds``...)."""
        k = self._names.index(name)
        from types import SimpleNamespace

        return SimpleNamespace(n_parameters=1, suggested_init=[self._init[k]],
                               suggested_bounds=[self._bounds[k]],
                               suggested_fixed=[self._fixed[k]], constrained=False)

    def suggested_init(self) -> list[float]:
        """Initial parameter values."""
        return list(self._init)

    def suggested_bounds(self) -> list[tuple[float, float]]:
        """Parameter bounds."""
        return list(self._bounds)

    def suggested_fixed(self) -> list[bool]:
        """Fixed flags."""
        return list(self._fixed)


class PyhfCompatibleModel:
    """pyhf model interface (NumPy) on a :class:`CombinedLikelihood`.

    Args:
        likelihood: the torch likelihood (evaluated in float64 on its device; a float32 module
            is copied, not converted in place).
        poi: parameter of interest (default: the first coefficient).
        init: initial values (default: zeros = the SM).
        bounds: ``(npars, 2)`` bounds (default: the likelihood's bounds; infinite ones replaced
            by ``+-default_bound``).
        fixed: fixed flags (default: none).
        default_bound: bound used where the likelihood has none.
    """

    def __init__(self, likelihood: CombinedLikelihood, *, poi: str | None = "",
                 init: Sequence[float] | None = None,
                 bounds: Sequence[Sequence[float]] | None = None,
                 fixed: Sequence[bool] | None = None, default_bound: float = 100.0) -> None:
        if likelihood.dtype != torch.float64:
            likelihood = copy.deepcopy(likelihood).to(torch.float64)
        self.likelihood = likelihood
        names = likelihood.names
        if bounds is None:
            b = np.array(likelihood.bounds, dtype=float)
            b = np.where(np.isfinite(b), b, np.sign(b) * default_bound)
            bounds = b.tolist()
        if init is None:
            init = [min(max(0.0, lo), hi) for lo, hi in bounds]
        if fixed is None:
            fixed = [False] * len(names)
        self.config = PyhfCompatibleConfig(names, init, bounds, fixed,
                                           names[0] if poi == "" and names else poi or None)
        self.batch_size = None

    # -- helpers
    def _x(self, pars: object) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(pars, dtype=np.float64), device=self.likelihood.device)
        return x.reshape(-1, self.config.npars)

    def _data(self, data: object) -> torch.Tensor | None:
        if data is None:
            return None
        d = np.asarray(data, dtype=np.float64).reshape(-1)
        n = self.likelihood.observed.shape[0]
        if d.shape[0] < n:
            raise ConfigError(f"data has {d.shape[0]} entries, the model expects {n}",
                              where="data")
        return torch.as_tensor(d[:n], device=self.likelihood.device)

    @property
    def data(self) -> np.ndarray:
        """Observed data (the Gaussian measurements; no auxiliary data)."""
        return self.likelihood.observed.detach().cpu().numpy().copy()

    # -- pyhf interface
    def logpdf(self, pars: object, data: object) -> np.ndarray:
        """``log L = -chi2/2`` (up to a constant), shape ``(1,)`` (``(B,)`` for batched pars)."""
        with torch.no_grad():
            value = self.likelihood.log_prob(self._x(pars), self._data(data))
        return value.cpu().numpy()

    def expected_actualdata(self, pars: object) -> np.ndarray:
        """Predicted measurements for ``pars``, shape ``(N,)``."""
        with torch.no_grad():
            out = self.likelihood.expected(self._x(pars))
        return out.cpu().numpy().reshape(-1) if out.shape[0] == 1 else out.cpu().numpy()

    def expected_auxdata(self, pars: object) -> np.ndarray:
        """No auxiliary data: an empty array."""
        return np.zeros(0)

    def expected_data(self, pars: object, include_auxdata: bool = True) -> np.ndarray:
        """Predicted measurements (the auxiliary part is empty)."""
        return self.expected_actualdata(pars)

    def nll_and_grad(self, pars: object, data: object = None) -> tuple[float, np.ndarray]:
        """``-2 log L`` and its gradient (torch autograd), for gradient-based minimisers.

        Example:
            >>> import torch
            >>> from smeft_pyhf.likelihood.combined import CombinedLikelihood, GaussianBlock
            >>> from smeft_pyhf.likelihood.gaussian import GaussianTerm
            >>> from smeft_pyhf.likelihood.predictions import QuadraticPredictions
            >>> pred = QuadraticPredictions(torch.zeros(1), torch.ones(1, 1), None, ["ca"])
            >>> lik = CombinedLikelihood([GaussianBlock(pred, GaussianTerm(torch.ones(1), torch.eye(1)))],
            ...                          names=("ca",))
            >>> PyhfCompatibleModel(lik).nll_and_grad([0.0])
            (1.0, array([-2.]))
        """
        x = self._x(pars).clone().requires_grad_(True)
        value = -2.0 * self.likelihood.log_prob(x, self._data(data)).sum()
        (grad,) = torch.autograd.grad(value, x)
        return float(value.detach()), grad.reshape(-1).cpu().numpy()
