"""Resampling indices by weight.
"""

from __future__ import annotations

import pytest
import torch

from smeft_pyhf.sampler.kernels.resampling import resample_indices


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resample_indices_follow_the_weights(method):
    g = torch.Generator().manual_seed(8)
    p = torch.tensor([0.1, 0.2, 0.0, 0.7])
    idx = resample_indices(p.log(), 100000, generator=g, method=method)
    freq = torch.bincount(idx, minlength=4).double() / 100000
    # binomial SE sqrt(p (1 - p) / n) <= 0.0016: 0.01 is > 6 SE
    assert torch.allclose(freq, p.double(), atol=0.01)
    assert int((idx == 2).sum()) == 0
