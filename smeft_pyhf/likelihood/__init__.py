"""smeft_pyhf.likelihood (see the package docstring)."""
