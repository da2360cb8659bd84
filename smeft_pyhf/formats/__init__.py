"""The types that cross the package's layers, at the bottom of it (no torch, no pyhf).

* :mod:`.card`: :class:`~.card.MeasurementCard` (the one card type: written by the ingest,
  read by the likelihood), its schema, reader and writer, and the SFitter categories.
* :mod:`.coefficients`: :class:`~.coefficients.CoefficientSpec` and the operator/coefficient
  names.
* :mod:`.intervals`: the confidence levels (``"68"``, ``"95"``), their thresholds, the
  :class:`~.intervals.Interval` type and the one crossing code.

Each concept has one type here; ingest, likelihood, results and fit import it from this layer.
"""
