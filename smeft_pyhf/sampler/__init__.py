"""smeft_pyhf.sampler (see the package docstring)."""
