"""The RQ-spline coupling flow: normalisation, change of variables, determinism."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.flows import CouplingFlow, FlowConfig, build_flow, coupling_masks

SMALL = FlowConfig(n_blocks=4, bins=8, hidden_layers=2, hidden_features=16)


def perturbed_flow(dim: int, config: FlowConfig = SMALL, seed: int = 0, size: float = 0.5):
    """A flow far from the identity (random last layers), in float64."""
    g = torch.Generator().manual_seed(seed)
    flow = build_flow(dim, config=config, generator=g).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(size * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    return (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_identity_initialisation_is_the_standard_normal():
    flow = build_flow(3, config=FlowConfig(), generator=torch.Generator().manual_seed(0))
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(flow.log_prob(x), standard_normal_log_prob(x), atol=1e-5)
    # the paper's architecture: 16 bins, 3 hidden layers of 64
    linears = [m for m in flow.transform.transforms[0].modules() if hasattr(m, "weight")]
    assert [tuple(m.weight.shape) for m in linears[:-1]] == [(64, 1), (64, 64), (64, 64)]
    assert linears[-1].weight.shape[0] == 2 * (16 + 16 + 15)


def test_flow_density_integrates_to_one_on_a_grid():
    flow = perturbed_flow(2, size=0.2)
    h = 0.04
    axis = torch.arange(-9.0, 9.0, h, dtype=torch.float64) + h / 2
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_q = flow.log_prob(grid)
    # far from the standard normal ...
    assert float((log_q - standard_normal_log_prob(grid))[grid.norm(dim=1) < 3].abs().max()) > 0.5
    # ... but normalised: the midpoint rule converges to 1 - 4e-5 (h=0.04), 1 - 5e-7 (h=0.01)
    total = float(torch.exp(log_q).sum() * h * h)
    assert total == pytest.approx(1.0, abs=5e-4)


def test_importance_estimate_of_normalisation_in_5d():
    # E_{x ~ N(0, 1.5^2)} [g(x) / r(x)] = 1 for a normalised g
    flow = perturbed_flow(5, size=0.3)
    g = torch.Generator().manual_seed(3)
    n = 100000
    x = 1.5 * torch.randn(n, 5, generator=g, dtype=torch.float64)
    log_r = standard_normal_log_prob(x / 1.5) - 5 * math.log(1.5)
    with torch.no_grad():
        ratio = torch.exp(flow.log_prob(x) - log_r)
    se = float(ratio.std()) / math.sqrt(n)
    assert abs(float(ratio.mean()) - 1) < 5 * se


def test_log_prob_matches_change_of_variables_with_autograd_jacobian():
    flow = perturbed_flow(3)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x, log_q = flow.sample_from_noise(z)
    transform = flow().transform.inv
    for i in range(z.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0], z[i])
        expected = standard_normal_log_prob(z[i]) - torch.linalg.slogdet(jac)[1]
        assert float(log_q[i].detach()) == pytest.approx(float(expected), abs=1e-8)
    # sampling and density evaluation agree (inverse consistency)
    assert torch.allclose(flow.log_prob(x), log_q, atol=1e-8)


def test_zuko_distribution_interface():
    flow = build_flow(2, config=SMALL)
    dist = flow()
    assert isinstance(dist, torch.distributions.Distribution)
    x, log_q = dist.rsample_and_log_prob((7,))
    assert x.shape == (7, 2) and log_q.shape == (7,)
    assert torch.allclose(dist.log_prob(x), log_q, atol=1e-5)
    assert dist.rsample((3,)).shape == (3, 2)


def test_sampling_is_reparametrised_and_differentiable():
    flow = build_flow(2, config=SMALL, generator=torch.Generator().manual_seed(0))
    x, log_q = flow.sample_and_log_prob(32, generator=torch.Generator().manual_seed(1))
    (x.sum() + log_q.sum()).backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)


def test_determinism_of_initialisation_and_sampling():
    a = build_flow(4, config=SMALL, generator=torch.Generator().manual_seed(5))
    b = build_flow(4, config=SMALL, generator=torch.Generator().manual_seed(5))
    c = build_flow(4, config=SMALL, generator=torch.Generator().manual_seed(6))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )
    xa, la = a.draw(50, generator=torch.Generator().manual_seed(7))
    xb, lb = b.draw(50, generator=torch.Generator().manual_seed(7), batch_size=16)
    assert torch.equal(xa, xb) and torch.allclose(la, lb)


def test_flow_follows_dtype(dtype, device):
    flow = build_flow(3, config=SMALL).to(device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    x, log_q = flow.sample_and_log_prob(10, generator=g)
    assert x.dtype == dtype and log_q.dtype == dtype and x.device.type == device.type


@pytest.mark.parametrize("dim", [1, 2, 3, 7])
def test_any_dimension_works(dim):
    flow = build_flow(dim, config=SMALL)
    x, log_q = flow.draw(20, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20, dim) and torch.isfinite(log_q).all()


@pytest.mark.parametrize("dim", [2, 3, 5, 8, 42])
def test_binary_masks_split_every_pair(dim):
    bits = max(1, math.ceil(math.log2(dim)))
    masks = coupling_masks(dim, 2 * bits, "binary")
    for m in masks:
        assert 0 < int(m.sum()) < dim
    for m0, m1 in zip(masks[::2], masks[1::2], strict=True):
        assert torch.equal(m0, ~m1)  # every dimension is transformed in every pair of blocks
    for i, j in itertools.combinations(range(dim), 2):
        assert any(bool(m[i] != m[j]) for m in masks)


def test_alternating_masks():
    masks = coupling_masks(4, 3, "alternating")
    assert [m.int().tolist() for m in masks] == [[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]


def test_flow_config_validation():
    with pytest.raises(ConfigError, match="bins"):
        FlowConfig(bins=1)
    assert FlowConfig.paper("combined") == FlowConfig()
    assert isinstance(build_flow(2, config=FlowConfig(masks="alternating")), CouplingFlow)


def test_cpu_chunks_give_the_same_numbers() -> None:
    """Chunked evaluation (CPU, no gradients) equals one whole-batch evaluation."""
    whole = build_flow(5, config=FlowConfig(n_blocks=2, hidden_features=16, identity_init=False,
                                            cpu_chunk=10_000),
                       generator=torch.Generator().manual_seed(3))
    chunked = build_flow(5, config=FlowConfig(n_blocks=2, hidden_features=16,
                                              identity_init=False, cpu_chunk=7),
                         generator=torch.Generator().manual_seed(3))
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(whole.log_prob(x), chunked.log_prob(x), atol=1e-5)
        a = whole.sample_and_log_prob(50, generator=torch.Generator().manual_seed(5))
        b = chunked.sample_and_log_prob(50, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-4)
    assert not bool(torch.allclose(whole.log_prob(x), torch.zeros(50)))  # a non-trivial flow
    # with gradients nothing is chunked: one graph through the whole batch
    xg = x.clone().requires_grad_(True)
    chunked.log_prob(xg).sum().backward()
    assert xg.grad is not None and xg.grad.shape == x.shape


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_untrained_flow_is_the_standard_normal_in_any_dimension(dim):
    # one dimension has no subnets (zuko's element-wise spline): it starts at identity too
    flow = build_flow(dim, config=FlowConfig(n_blocks=4, hidden_features=16),
                      generator=torch.Generator().manual_seed(0))
    x = torch.randn(1000, dim, generator=torch.Generator().manual_seed(1))
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    assert torch.allclose(flow.log_prob(x).detach(), normal, atol=1e-5)
