"""The documents and types that cross the package's layers, at the bottom of it (no torch, no
pyhf).

* :mod:`.reader`: the one reader of YAML/JSON documents: schema validation (JSON Schema draft
  2020-12, ``smeft_pyhf/schemas/``) and one error pattern naming the file and the field.
* :mod:`.card`: :class:`~.card.MeasurementCard` (the one card type: written by the ingest,
  read by the likelihood), its schema, reader and writer, and the SFitter categories.
* :mod:`.mapping`: :class:`~.mapping.CategoryMapping` (nuisance parameter -> SFitter category
  rules), its schema and reader.
* :mod:`.runcard`: :class:`~.runcard.Runcard` (a fit's configuration) and the validated
  document -> runcard step; the schema of its ``sampler`` block is generated from the sampler's
  dataclasses by :mod:`smeft_pyhf.fit.sampler_block`.
* :mod:`.coefficients`: :class:`~.coefficients.CoefficientSpec` and the operator/coefficient
  names.
* :mod:`.intervals`: the confidence levels (``"68"``, ``"95"``), their thresholds, the
  :class:`~.intervals.Interval` type and the one crossing code.

The results file (``smeft_pyhf/schemas/results.schema.json``) is written and read by
:mod:`smeft_pyhf.results.results_file` through :mod:`.reader`; tensor checkpoints have one
format, :func:`smeft_pyhf._io.save_tensors` / :func:`smeft_pyhf._io.load_tensors`
(``torch.load(weights_only=True)``).

Each concept has one type here; ingest, likelihood, results and fit import it from this layer.
"""
