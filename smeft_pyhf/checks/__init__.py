"""Validation tools: checks of the reduced inputs against the published likelihoods.

* :mod:`.full_likelihood`: the published HistFactory workspace with its signal scaled by the
  SMEFT factor ``mu(c)`` (a pyhf custom modifier);
* :mod:`.profile_scan`: exact profile scans of that model in one coefficient (the ingest
  fitter's objective and Minuit);
* :mod:`.card_vs_full`: the Gaussian measurement card against the full likelihood, side by
  side (``smeft-pyhf compare``).
"""
