"""The chunked evaluator.
"""

from __future__ import annotations

import pytest
import torch

from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks, map_chunks


def test_evaluate_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="shape"):
        evaluate_in_chunks(lambda x: x, torch.zeros(3, 2))


def test_chunks_give_the_one_call_result_and_nan_becomes_minus_inf():
    x = torch.randn(1001, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def target(p):
        out = -0.5 * (p**2).sum(-1)
        return torch.where(p[:, 0] > 1.5, torch.nan, out)

    whole = evaluate_in_chunks(target, x)
    parts = evaluate_in_chunks(target, x, 100)
    assert torch.equal(whole, parts)
    bad = x[:, 0] > 1.5
    assert bool(bad.any()) and bool(torch.isneginf(parts[bad]).all())
    assert torch.equal(parts[~bad], -0.5 * (x[~bad] ** 2).sum(-1))
    assert evaluate_in_chunks(target, x[:0], 10).shape == (0,)


def test_map_chunks_concatenates_tuples():
    x = torch.arange(10.0)[:, None]
    a, b = map_chunks(lambda p: (p[:, 0], 2 * p), x, 3)
    assert torch.equal(a, torch.arange(10.0)) and torch.equal(b, 2 * x)


def test_the_flow_evaluates_in_chunks_on_the_cpu_without_gradients():
    from smeft_pyhf.sampler.config import FlowConfig
    from smeft_pyhf.sampler.flows import build_flow

    flow = build_flow(3, config=FlowConfig(n_blocks=2, hidden_features=8, cpu_chunk=64),
                      generator=torch.Generator().manual_seed(1))
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        chunked = flow.log_prob(x)
    whole = flow.log_prob(x).detach()  # with gradients: one call
    assert torch.allclose(chunked, whole, atol=1e-6, rtol=0)
    z1, lq1 = flow.draw(300, generator=torch.Generator().manual_seed(3), batch_size=70)
    z2, lq2 = flow.draw(300, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z1, z2, atol=1e-6) and torch.allclose(lq1, lq2, atol=1e-5)
