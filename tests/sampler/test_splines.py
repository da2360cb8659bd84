"""The fused RQ splines and the flow's fused path, against zuko's own implementation."""

from __future__ import annotations

import pytest
import torch
from zuko.transforms import MonotonicRQSTransform

from smeft_pyhf.sampler.flows import FlowConfig, build_flow
from smeft_pyhf.sampler.splines import rqs_forward, rqs_inverse

K = 16


def zuko_spline(params: torch.Tensor) -> MonotonicRQSTransform:
    return MonotonicRQSTransform(params[..., :K], params[..., K : 2 * K], params[..., 2 * K :],
                                 bound=5.0, slope=1e-3)


@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_spline_equals_zuko_forward_and_inverse(scale):
    g = torch.Generator().manual_seed(0)
    params = scale * torch.randn(2000, 5, 3 * K - 1, generator=g, dtype=torch.float64)
    # inputs inside and outside [-5, 5] (identity there)
    x = 3.0 * torch.randn(2000, 5, generator=g, dtype=torch.float64)
    assert bool((x.abs() > 5).sum() > 100)
    y_ref, ladj_ref = zuko_spline(params).call_and_ladj(x)
    y, ladj = rqs_forward(x, params)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-11)
    assert torch.allclose(ladj, ladj_ref, rtol=0, atol=1e-9)
    x_back, ladj_inv = rqs_inverse(y_ref, params)
    # zuko's own inverse is as precise (about 1e-7 at scale 20: bins of width ~1e-3 * 10)
    tol = 1e-9 if scale < 10 else 1e-5
    assert torch.allclose(x_back, x, rtol=0, atol=tol)
    assert torch.allclose(ladj_inv, -ladj_ref, rtol=0, atol=10 * tol)


def test_spline_gradients_are_exact():
    g = torch.Generator().manual_seed(1)
    params = torch.randn(6, 3, 3 * 5 - 1, generator=g, dtype=torch.float64, requires_grad=True)
    x = (3.0 * torch.randn(6, 3, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(rqs_forward, (x, params))
    assert torch.autograd.gradcheck(rqs_inverse, (x, params))


def test_fused_flow_equals_zuko_flow_values_and_gradients():
    flow = build_flow(7, config=FlowConfig(n_blocks=5, identity_init=False),
                      generator=torch.Generator().manual_seed(3)).double()
    dist = flow()  # zuko's NormalizingFlow over the same modules
    z = 2.0 * torch.randn(300, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        x, log_q = flow.sample_from_noise(z)
        assert torch.allclose(x, dist.transform.inv(z), rtol=0, atol=1e-10)
        assert torch.allclose(log_q, dist.log_prob(x), rtol=0, atol=1e-9)
        assert torch.allclose(flow.log_prob(x), log_q, rtol=0, atol=1e-9)

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        flow.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in flow.parameters()]

    ours = grads(flow.log_prob(x).sum())
    ref = grads(dist.log_prob(x).sum())
    assert max(float((a - b).abs().max()) for a, b in zip(ours, ref, strict=True)) < 1e-9
    x_s, log_q_s = flow.sample_from_noise(z)
    ours = grads(x_s.sum() + log_q_s.sum())
    x_z = dist.transform.inv(z)
    log_q_z = dist.base.log_prob(z) - dist.transform.inv.log_abs_det_jacobian(z, x_z)
    ref = grads(x_z.sum() + log_q_z.sum())
    assert max(float((a - b).abs().max()) for a, b in zip(ours, ref, strict=True)) < 1e-9
