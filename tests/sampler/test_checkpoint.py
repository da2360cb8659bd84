"""Sampler checkpoints: resumed only under the same hash, damaged files ignored."""

from __future__ import annotations

import logging

import torch

from smeft_pyhf.sampler.checkpoint import CHECKPOINT_FILE, Checkpoint, config_hash
from smeft_pyhf.sampler.kernels.nonfinite import NonFiniteCounts

CPU = torch.device("cpu")


def _key(**changes):
    args = {"seed": 0, "names": ["a", "b"], "ranges": torch.tensor([[0.0, 1.0], [-1.0, 1.0]]),
            "init_scale": 1.0, "init_mean": None, "device": CPU, "support": None}
    args.update(changes)
    return config_hash({"n": 1}, **args)


def test_the_hash_changes_with_every_input():
    base = _key()
    assert base == _key()
    others = [_key(seed=1), _key(names=["a", "c"]), _key(init_scale=2.0),
              _key(ranges=torch.tensor([[0.0, 1.0], [-1.0, 2.0]])),
              _key(init_mean=torch.zeros(2)), _key(support=torch.zeros(2, 2)),
              config_hash({"n": 2}, seed=0, names=["a", "b"],
                          ranges=torch.tensor([[0.0, 1.0], [-1.0, 1.0]]), init_scale=1.0,
                          init_mean=None, device=CPU)]
    assert len({base, *others}) == len(others) + 1


def test_results_round_trip_and_another_hash_starts_afresh(tmp_path, caplog):
    ck = Checkpoint.open(tmp_path, _key(), CPU)
    counts = NonFiniteCounts(10, 1, 2)
    ck.record("prescale", counts, 1.25, flow_state={"w": torch.arange(3.0)})
    back = Checkpoint.open(tmp_path, _key(), CPU)
    assert back.done == ["prescale"] and back.results["prescale"] == counts
    assert back.timings == {"prescale": 1.25}
    assert torch.equal(back.flow_state["w"], torch.arange(3.0))
    with caplog.at_level(logging.WARNING):
        fresh = Checkpoint.open(tmp_path, _key(seed=5), CPU)
    assert fresh.done == [] and "another configuration" in caplog.text


def test_a_damaged_file_is_ignored(tmp_path, caplog):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        ck = Checkpoint.open(tmp_path, _key(), CPU)
    assert ck.done == [] and "unreadable checkpoint" in caplog.text
