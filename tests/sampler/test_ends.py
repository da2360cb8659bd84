"""The profile bins at the interval ends maximised again (analytic profiles of a Gaussian)."""

from __future__ import annotations

import pytest
import torch

from smeft_pyhf.results.intervals import profiled_interval
from smeft_pyhf.sampler.ends import crossing_bins, refine_ends
from smeft_pyhf.sampler.profiling import ProfileResult

COV = torch.tensor([[1.0, 0.6, 0.2], [0.6, 2.0, -0.5], [0.2, -0.5, 0.5]], dtype=torch.float64)
PREC = torch.linalg.inv(COV)
MEAN = torch.tensor([0.3, -1.0, 0.1], dtype=torch.float64)


def _log_l(x: torch.Tensor) -> torch.Tensor:
    r = x - MEAN
    return -0.5 * torch.einsum("bi,ij,bj->b", r, PREC, r)


def _exact(centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact profile of every coefficient at the centres, and the points where it sits."""
    d, p = centres.shape
    sd = COV.diagonal().sqrt()
    prof = -0.5 * ((centres - MEAN[:, None]) / sd[:, None]) ** 2
    pts = MEAN.expand(d, p, d).clone()
    for i in range(d):
        pts[i] += (centres[i] - MEAN[i])[:, None] * (COV[:, i] / COV[i, i])[None, :]
    return prof, pts


def _result(prof: torch.Tensor, pts: torch.Tensor, centres: torch.Tensor) -> ProfileResult:
    return ProfileResult.from_1d(prof, pts, centres, MEAN.clone(), 0.0)


def _ends(prof: ProfileResult, i: int) -> tuple[float, float]:
    delta = 2.0 * (prof.best_log_prob - prof.profile1d[i])
    iv = profiled_interval(prof.centres1d[i].numpy(), delta.numpy(), level="95")
    return iv.low, iv.high


@pytest.fixture()
def grid() -> torch.Tensor:
    sd = COV.diagonal().sqrt()
    u = torch.linspace(-4.0, 4.0, 33, dtype=torch.float64)
    return MEAN[:, None] + sd[:, None] * u[None, :] + 0.013   # centres off the grid of sd's


def test_crossing_bins_marks_both_sides_of_every_crossing() -> None:
    delta = torch.tensor([[9.0, 5.0, 3.0, 0.5, 0.0, 0.8, 3.0, 5.0, 9.0]])
    assert crossing_bins(delta, [3.84]).nonzero()[:, 1].tolist() == [1, 2, 6, 7]
    assert crossing_bins(delta, [1.0, 3.84]).nonzero()[:, 1].tolist() == [1, 2, 3, 5, 6, 7]
    assert crossing_bins(delta, [3.84], width=2).nonzero()[:, 1].tolist() == [0, 1, 2, 3, 5, 6,
                                                                                7, 8]


def test_short_bins_beside_the_ends_are_raised_to_the_exact_profile(grid) -> None:
    prof, pts = _exact(grid)
    gen = torch.Generator().manual_seed(5)
    # every bin stopped short: value lowered by 0-0.4 in log L, point moved off its optimum
    short = torch.rand(prof.shape, generator=gen, dtype=torch.float64) * 0.4
    moved = pts + 0.3 * torch.randn(pts.shape, generator=gen, dtype=torch.float64)
    for i in range(3):
        moved[i, :, i] = grid[i]
    bad = _result(prof - short, moved, grid)
    out = refine_ends(_log_l, bad, ["a", "b", "c"])
    sd = COV.diagonal().sqrt()
    for i in range(3):
        # the ends of the exact profile interpolated through these centres
        want = _ends(_result(prof, pts, grid), i)
        got = _ends(out.profile, i)
        assert got == pytest.approx(want, abs=1e-6)
        # ... which lie within 0.02 sd of the analytic mean +- 1.96 sd
        assert got[0] == pytest.approx(float(MEAN[i] - 1.95996 * sd[i]), abs=0.02 * float(sd[i]))
        assert got[1] == pytest.approx(float(MEAN[i] + 1.95996 * sd[i]), abs=0.02 * float(sd[i]))
        before = _ends(bad, i)
        assert max(abs(before[0] - want[0]), abs(before[1] - want[1])) > 0.01 * float(sd[i])
    raised = (out.profile.profile1d - bad.profile1d).abs() > 1e-9
    assert out.n_raised == int(raised.sum()) > 0
    # the refined bins hold the exact profile; bins far from every end stay as they were
    assert torch.allclose(out.profile.profile1d[raised], prof[raised], atol=1e-7)
    assert not bool(raised[:, 0].any()) and not bool(raised[:, 4].any())
    assert out.converged_fraction > 0.95


def test_a_crossing_moved_by_a_short_bin_is_followed_to_the_true_end(grid) -> None:
    prof, pts = _exact(grid)
    bad_prof = prof.clone()
    # coefficient 0: bins inside the true 95 % end dropped far, so the binned end sits two
    # bins inside it; raising them moves the crossing outwards, to bins not yet refined
    delta = 2.0 * (0.0 - prof[0])
    inside = torch.nonzero((delta > 1.5) & (delta < 3.84) & (grid[0] > MEAN[0])).squeeze(1)
    bad_prof[0, inside] -= 5.0
    bad_prof[0, inside.max() + 1:] -= 3.0
    bad = _result(bad_prof, pts, grid)
    assert _ends(bad, 0)[1] < _ends(_result(prof, pts, grid), 0)[1] - 0.3
    out = refine_ends(_log_l, bad, ["a", "b", "c"])
    assert out.rounds >= 2
    assert _ends(out.profile, 0) == pytest.approx(_ends(_result(prof, pts, grid), 0), abs=1e-6)
