"""Histogram ranges from the pre-scaling chains and the given fit ranges."""

from __future__ import annotations

import torch

from smeft_pyhf.sampler.ranges import histogram_ranges, posterior_ranges


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
