"""Loader workers and intra-op threads: ``data.num_workers`` changes nothing but where batches are made."""

from __future__ import annotations

import os

import pytest
import torch
from engine_helpers import tiny_config
from torch.utils.data import DataLoader, Dataset

from pointseg.engine.distributed import worker_init_fn
from pointseg.engine.trainer import Trainer, intra_op_threads

pytestmark = pytest.mark.usefixtures("tiny_backbone")


def test_intra_op_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert intra_op_threads("auto", 1) == 3
    assert intra_op_threads("auto", 0) == 4
    assert intra_op_threads("auto", 8) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the 4 cores
    assert intra_op_threads("auto", 1) == 1
    assert intra_op_threads(3, 5) == 3


@pytest.mark.parametrize("bad", [0, -1, "many", True])
def test_bad_threads_setting_is_an_error_naming_the_key(data_root, bad):
    with pytest.raises(ValueError, match="train.threads must be a positive integer, auto, or null"):
        tiny_config(data_root, threads=bad)


def test_trainer_applies_train_threads(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, threads=1), tmp_path / "one")
    assert trainer.threads == torch.get_num_threads() == 1
    torch.set_num_threads(2)
    untouched = Trainer(tiny_config(data_root), tmp_path / "default")  # threads unset: left alone
    assert untouched.threads == 2


class _Threads(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return torch.get_num_threads()


def test_loader_workers_compute_on_one_thread():
    """Workers must not start an intra-op pool of their own beside the training threads."""
    torch.set_num_threads(2)
    loader = DataLoader(_Threads(), batch_size=None, num_workers=1, worker_init_fn=worker_init_fn)
    assert list(loader) == [1, 1]


def _with_workers(cfg, workers: int):
    cfg.data.num_workers = workers
    return cfg


def test_worker_batches_equal_in_process_batches(data_root, tmp_path):
    """Same samples, augmentations and order (3 epochs of 2 scenes) with and without a worker."""
    a = Trainer(_with_workers(tiny_config(data_root), 0), tmp_path / "a")
    b = Trainer(_with_workers(tiny_config(data_root), 1), tmp_path / "b")
    for _ in range(6):
        x, y = a._next_batch(), b._next_batch()
        assert x["name"] == y["name"]
        for key in ("coords", "feat", "segment"):
            assert torch.equal(x[key], y[key]), key


def test_stop_and_resume_with_a_worker_equals_in_process_run(data_root, tmp_path):
    straight = Trainer(_with_workers(tiny_config(data_root, iterations=5, save_every=0), 0), tmp_path / "straight")
    straight.train()
    run = tmp_path / "worker"
    Trainer(_with_workers(tiny_config(data_root, iterations=5, save_every=0), 1), run).train(stop_at=3)
    resumed = Trainer(_with_workers(tiny_config(data_root, iterations=5, save_every=0), 1), run, resume=True)
    resumed.train()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_thread_tuner_keeps_the_fastest_count_per_point_and_measures_again():
    from pointseg.engine.threads import ThreadTuner, candidate_counts

    assert candidate_counts(2, 0) == [2, 1]
    assert candidate_counts(16, 0) == [16, 8, 1]
    assert candidate_counts(2, 1) == [1]
    tuner = ThreadTuner([2, 1], period=10, probe_steps=2, warmup=1)
    # Seconds per point of each count: 2 threads twice as fast while idle, slower while busy.
    cost = {"idle": {2: 1.0, 1: 2.0}, "busy": {2: 4.0, 1: 2.2}}
    seen = []

    def step(load: str, points: int = 1000) -> None:
        n = tuner.before_step()
        seen.append(n)
        assert torch.get_num_threads() == n
        tuner.after_step(cost[load][n] * points, points)

    step("idle")  # warm-up step at the first candidate
    for _ in range(4):  # the probe: 2 steps at 2 threads, 2 at 1; batches of other sizes
        step("idle", points=500 + 100 * len(seen))
    assert seen == [2, 2, 2, 1, 1] and tuner.chosen == 2
    for _ in range(6):
        step("busy")
    assert seen[5:] == [2] * 6  # no measurement before the period is over
    for _ in range(4):
        step("busy")  # the second probe, under load
    assert seen[11:] == [2, 2, 1, 1] and tuner.chosen == 1
    assert [h["chosen"] for h in tuner.history] == [2, 1]
    step("busy")
    assert seen[-1] == 1
    # A count only slightly faster than all cores (10 % < the 15 % margin) does not win.
    close = ThreadTuner([2, 1], period=10, probe_steps=1, warmup=0)
    for seconds_per_point in (1.0, 0.9):  # 2 threads, then 1
        close.before_step()
        close.after_step(seconds_per_point * 100, 100)
    assert close.history[-1]["us_per_point"] == pytest.approx({2: 1e6, 1: 9e5}) and close.chosen == 2


def test_run_says_which_backend_and_threads_auto_chose(tmp_path, data_root):
    cfg = tiny_config(data_root, iterations=1, threads="auto")
    cfg.model.backend = "auto"
    trainer = Trainer(cfg, tmp_path / "run", device="cpu")  # the thread count is restored by one_thread
    trainer.train()
    head = (tmp_path / "run" / "config.yaml").read_text().splitlines()[:2]
    assert head == ["# model.backend: auto -> torch on cpu",
                    f"# train.threads: auto -> chosen online among {trainer.thread_tuner.candidates}"]
