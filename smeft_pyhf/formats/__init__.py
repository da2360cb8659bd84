"""The types that cross the package's layers, at the bottom of it (no torch, no pyhf).

* :mod:`.coefficients`: :class:`~.coefficients.CoefficientSpec` and the operator/coefficient
  names.

Each concept has one type here; ingest, likelihood, results and fit import it from this layer.
"""
