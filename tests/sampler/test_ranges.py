"""Histogram ranges from the pre-scaling chains and the given fit ranges."""

from __future__ import annotations

import torch

from smeft_pyhf.sampler.ranges import extend_to_profile, histogram_ranges, posterior_ranges


def test_posterior_ranges_reach_every_chain():
    chains = torch.tensor([[-1.0, 0.0], [3.0, 0.5]])
    mean, std = torch.tensor([0.0, 0.2]), torch.tensor([0.5, 1.0])
    r = posterior_ranges(chains, mean, std, 4.0)
    # column 0: mean +- 2 = [-2, 2], widened to the chain at 3 plus 5 % of the span 4
    # column 1: [-3.8, 4.2] already holds both chains
    assert torch.allclose(r, torch.tensor([[-2.0, 3.2], [-3.8, 4.2]]))
    assert torch.equal(posterior_ranges(chains[:0], mean, std, 4.0),
                       torch.stack([mean - 4 * std, mean + 4 * std], 1))


def test_histogram_ranges_intersect_or_keep_the_given_ones():
    given = torch.tensor([[-5.0, 5.0], [0.0, 1.0]])
    posterior = torch.tensor([[-1.0, 9.0], [2.0, 3.0]])
    assert torch.equal(histogram_ranges(None, posterior, "posterior"), posterior)
    assert torch.equal(histogram_ranges(given, posterior, "given"), given)
    # the second intersection is empty: the given range is kept there
    assert torch.equal(histogram_ranges(given, posterior, "posterior"),
                       torch.tensor([[-1.0, 5.0], [0.0, 1.0]]))


def _valley(x: torch.Tensor) -> torch.Tensor:
    """x0's main minimum at 0 (unit width) and a shallow second one at x0 = 2.8, reached along
    a curved valley x1 = 0.3 x0^2 whose floor there lies 1.5 below the main one in log L (its
    profile: -2 Delta log L = 3 + ((x0 - 2.8) / 0.25)^2 near it); x2 independent."""
    main = -0.5 * x[:, 0] ** 2
    second = -1.5 - 0.5 * ((x[:, 0] - 2.8) / 0.25) ** 2
    return (torch.logaddexp(main, second) - 0.5 * ((x[:, 1] - 0.3 * x[:, 0] ** 2) / 0.2) ** 2
            - 0.5 * x[:, 2] ** 2)


def _chains(n: int = 400) -> torch.Tensor:
    """Points of the main mode only (what pre-scaling chains that missed the second hold)."""
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[:, 1] = 0.3 * x[:, 0] ** 2 + 0.2 * x[:, 1]
    return x


def _profile(value: float) -> float:
    """-2 Delta log L of x0's exact profile at ``value``."""
    return float(-2.0 * torch.logaddexp(torch.tensor(-0.5 * value**2),
                                        torch.tensor(-1.5 - 0.5 * ((value - 2.8) / 0.25) ** 2)))


def test_an_end_inside_a_shallow_second_minimum_moves_to_the_given_edge():
    ranges = torch.tensor([[-3.5, 2.6], [-1.0, 4.0], [-4.0, 4.0]], dtype=torch.float64)
    given = torch.tensor([[-5.0, 3.3], [-2.0, 6.0], [-6.0, 6.0]], dtype=torch.float64)
    assert _profile(2.6) < 3.84 < _profile(-3.5)    # the upper end cuts the 95 % region
    out = extend_to_profile(_valley, ranges, given, _chains())
    expected = ranges.clone()
    expected[0, 1] = 3.3
    assert torch.equal(out, expected)


def test_ends_outside_the_region_stay_and_without_given_ranges_ends_move_by_half_widths():
    gauss = lambda x: -0.5 * (x**2).sum(-1)  # noqa: E731
    chains = torch.randn(300, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    four = torch.tensor([[-4.0, 4.0], [-3.0, 2.5]], dtype=torch.float64)
    assert torch.equal(extend_to_profile(gauss, four, None, chains), four)
    # +-1 (-2 Delta log L 1) -> +-2 (4, below 4.84) -> +-4 (16: stays)
    one = torch.tensor([[-1.0, 1.0], [-4.0, 4.0]], dtype=torch.float64)
    out = extend_to_profile(gauss, one, None, chains)
    assert torch.equal(out, torch.tensor([[-4.0, 4.0], [-4.0, 4.0]], dtype=torch.float64))
    assert torch.equal(extend_to_profile(gauss, one, None, chains, rounds=1),
                       torch.tensor([[-2.0, 2.0], [-4.0, 4.0]], dtype=torch.float64))
