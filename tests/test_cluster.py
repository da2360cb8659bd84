"""Steps 4 and 5 on a Dask cluster: the same numbers as in-process, a killed worker retried,
clear errors without Dask or without a reachable scheduler.

The cluster is a LocalCluster of 2 worker processes with one thread each (processes=True), the
setting of ``smeft-pyhf fit --workers 2``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from smeft_pyhf import cluster
from smeft_pyhf._resources import examples_dir
from smeft_pyhf.cli import cli
from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.profiling import ProfileConfig, profile
from smeft_pyhf.sampler.sampling import SampleConfig, sample_and_histogram

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def runner():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as lc, \
            distributed.Client(lc, set_as_default=False) as client:
        yield cluster.DaskRunner(client)


def _target():
    """A correlated 3D Gaussian times a bump: a local closure, so it pickles by value."""
    cov_inv = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]],
                           dtype=torch.float64)

    def log_prob(x):
        return -0.5 * ((x @ cov_inv) * x).sum(-1) + torch.log1p(0.5 * torch.tanh(x[:, 0]))

    return log_prob


def _draw(marker: Path):
    """A wide Gaussian proposal that kills its worker process the first time it runs anywhere
    while ``marker`` does not exist (and creates it)."""

    def draw(n, generator=None):
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task
        x = 2.0 * torch.randn(n, 3, generator=generator, dtype=torch.float64)
        log_q = -0.5 * (x / 2.0).pow(2).sum(-1) - 3 * (0.5 * 1.8378770664093453 + 0.6931471805599453)
        return x, log_q

    return draw


CFG = SampleConfig(n_batches=6, batch_size=3000, bins_1d=20, bins_2d=10, profile_bins_1d=8,
                   profile_bins_2d=5, n_best=2, keep_samples=4000)
RANGES = torch.tensor([[-4.0, 4.0], [-5.0, 5.0], [-6.0, 6.0]], dtype=torch.float64)


def test_map_yields_in_task_order(runner):
    # the first tasks sleep longest, so they finish last
    out = list(runner.map(time.sleep, [(0.3 - 0.05 * i,) for i in range(6)], label="sleep"))
    assert out == [None] * 6
    assert list(runner.map(int, [("11",), ("7",), ("21",)], shared={"base": 8})) == [9, 7, 17]


def test_killed_worker_is_retried_and_results_equal_in_process(runner, tmp_path, one_thread):
    marker = tmp_path / "killed"
    target = _target()
    dist = sample_and_histogram(_draw(marker), target, ranges=RANGES, config=CFG,
                                generator=torch.Generator().manual_seed(5), runner=runner)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died
    local = sample_and_histogram(_draw(marker), target, ranges=RANGES, config=CFG,
                                 generator=torch.Generator().manual_seed(5))
    for field, value in local._asdict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(dist, field)), field
        elif field != "seconds":
            assert value == getattr(dist, field), field
    assert local.n_samples == 6 * 3000 and local.samples.shape == (4000, 3)

    # step 5 from those start points: the same profiles, tasks of 40 points on 2 workers
    pcfg = ProfileConfig(max_steps=40, task_size=40)
    a = profile(target, local, config=pcfg)
    b = profile(target, dist, config=pcfg, runner=runner)
    for field in ("profile1d", "profile1d_points", "profile2d", "profile2d_points", "best_fit"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert (a.n_points, a.n_evaluations, a.nonfinite) == (b.n_points, b.n_evaluations,
                                                          b.nonfinite)
    assert a.n_points > 4 * 40  # several tasks
    # the profile of a Gaussian-like target: the best fit near the mode, finite everywhere
    assert torch.isfinite(a.profile1d).all()


def test_sampling_does_not_depend_on_the_chunk_order():
    # the in-process runner with the chunks' results merged in order equals the chunks run
    # in reverse order and merged in chunk order: a chunk is seeded by (seed, index) only
    class Reversed(cluster.InProcess):
        def map(self, fn, tasks, *, shared=None, label="tasks", level=20):
            out = [fn(*t, **(shared or {})) for t in reversed(tasks)]
            yield from reversed(out)

    marker = Path(__file__)  # exists: the draw never exits
    a = sample_and_histogram(_draw(marker), _target(), ranges=RANGES, config=CFG,
                             generator=torch.Generator().manual_seed(2))
    b = sample_and_histogram(_draw(marker), _target(), ranges=RANGES, config=CFG,
                             generator=torch.Generator().manual_seed(2), runner=Reversed())
    assert torch.equal(a.marginal2d, b.marginal2d) and a.ess == b.ess
    assert torch.equal(a.profile2d_points, b.profile2d_points)


# ----------------------------------------------------------------------------- the CLI

SAMPLER = """sampler:
  prescale: {n_samples: 512, n_steps: 60}
  flow: {n_blocks: 2}
  pretrain: {epochs: 1, mcmc_steps: 2}
  train: {n_batches: 3, batch_size: 256, buffered_per_online: 1}
  sample: {n_batches: 4, batch_size: 5000, profile_bins_2d: 12}
  profile: {max_steps: 30, task_size: 512}
"""


def small_default(tmp_path: Path) -> Path:
    """The embedded default (inputs, coefficients, seed) with a smaller sampler block."""
    root = tmp_path / "example"
    shutil.copytree(examples_dir(), root)
    text = (root / "default_runcard.yaml").read_text()
    start, end = text.index("\nsampler:\n") + 1, text.index("\noutput:") + 1
    path = root / "small.yaml"
    path.write_text(text[:start] + SAMPLER + text[end:])
    return path


@pytest.fixture
def one_thread():
    """Torch on one thread, as on every Dask worker: torch's elementwise kernels cut a large
    tensor into one range per thread and may round its cut elements differently (by one
    float32 ulp), so bit-for-bit equality needs the same thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fit_with_two_workers_equals_in_process(tmp_path, one_thread):
    path = small_default(tmp_path)
    results = {}
    for label, extra in (("local", []), ("dask", ["--workers", "2"])):
        out = tmp_path / label
        res = CliRunner().invoke(cli, ["fit", str(path), "-o", str(out), "--no-plots",
                                       "--quiet", *extra])
        assert res.exit_code == 0, res.output
        results[label] = json.loads((out / "results.json").read_text())
    local, dask = results["local"], results["dask"]
    assert local["intervals"] == dask["intervals"]
    assert local["best_fit"] == dask["best_fit"]
    # 5 coefficients, each with both intervals at both levels
    assert len(local["intervals"]) == 5
    assert all(local["intervals"][n]["profiled"]["95"]["segments"] for n in local["intervals"])


def test_unreachable_scheduler_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    address = "tcp://127.0.0.1:9"  # the discard port: nothing listens there
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["fit", str(small_default(tmp_path)), "-o",
                                   str(tmp_path / "out"), "--scheduler", address])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert text.startswith("Error (ConfigError)") and address in text
    assert "Traceback" not in res.output
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "out").exists()


def test_without_dask_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ConfigError, match=r'pip install "smeft-pyhf\[dask\]"'):
        cluster.require_dask()
    res = CliRunner().invoke(cli, ["fit", str(small_default(tmp_path)), "-o",
                                   str(tmp_path / "out"), "--workers", "2"])
    assert res.exit_code == 2
    assert 'pip install "smeft-pyhf[dask]"' in " ".join(res.output.split())


def test_workers_and_scheduler_exclude_each_other():
    with pytest.raises(ConfigError, match="exclude each other"), \
            cluster.open_runner(workers=2, scheduler="tcp://127.0.0.1:9"):
        pass
