"""smeft_pyhf.ingest (see the package docstring)."""
