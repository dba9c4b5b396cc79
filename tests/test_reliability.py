"""Faults a real user meets, each reproduced, with what is left on disk and the exact message.

Training faults run the real command (``tests/tiny_train_cli.py``: ``pointseg-train`` with the
tiny test backbone) in its own process where signals, locks or exit statuses matter, in this
process otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import CLASSES, read_jsonl, register_tiny_backbone, tiny_config
from omegaconf import OmegaConf

from pointseg.engine import checkpoint as checkpoint_module
from pointseg.engine.checkpoint import load_checkpoint, save_checkpoint
from pointseg.engine.config import config_from_dict, load_config, to_plain_dict
from pointseg.engine.trainer import Trainer
from pointseg.utils.io import load_npy
from pointseg.utils.lock import FolderBusyError, FolderLock

REPO = Path(__file__).resolve().parents[1]
CLI = Path(__file__).resolve().parent / "tiny_train_cli.py"
TIMING_KEYS = {"time", "memory_mb"}
ITERATIONS = 10  # of the runs that are interrupted: long enough to catch them mid-run
INTERRUPTED = {"iterations": ITERATIONS, "save_every": 4, "val_every": 5, "log_every": 1}


# ------------------------------------------------------------------------------ helpers
def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _command(*args: object) -> list[str]:
    return [sys.executable, str(CLI), *map(str, args)]


def _start(*args: object) -> subprocess.Popen:
    """The training command in its own session (its process group gets a terminal's Ctrl-C)."""
    return subprocess.Popen(
        _command(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), env=_env(), capture_output=True, text=True, timeout=300)


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before the test could act:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.005)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _assert_same_training(a: Path, b: Path) -> None:
    """Two run folders end with bit-identical checkpoints and logs (timings aside)."""
    ca, cb = load_checkpoint(a / "checkpoints" / "last.pth"), load_checkpoint(b / "checkpoints" / "last.pth")
    assert ca["iteration"] == cb["iteration"] == ITERATIONS
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name, value in sa[i].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb[i][name])), (i, name)
    assert ca["scheduler"] == cb["scheduler"] and ca["best_miou"] == cb["best_miou"]
    assert ca["rng"]["data"] == cb["rng"]["data"] and torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])

    def strip(records):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]

    assert strip(read_jsonl(a / "log.jsonl")) == strip(read_jsonl(b / "log.jsonl"))
    assert read_jsonl(a / "val.jsonl") == read_jsonl(b / "val.jsonl")


@pytest.fixture(scope="module")
def interrupted_config(data_root, tmp_path_factory) -> Path:
    """The config of the interrupted runs (a DataLoader process, so Ctrl-C reaches one), as YAML."""
    register_tiny_backbone()
    cfg = tiny_config(data_root, **INTERRUPTED)
    cfg.data.num_workers = 1
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture(scope="module")
def reference_run(interrupted_config, tmp_path_factory) -> Path:
    """The same training, uninterrupted, in this process."""
    register_tiny_backbone()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("reference") / "run"
        Trainer(load_config(interrupted_config), run, device="cpu").train()
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture
def tiny_yaml(data_root, tmp_path, tiny_backbone) -> Path:
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(tiny_config(data_root), path)
    return path


def _train_main(*args: object) -> int:
    from pointseg.cli.train import main

    return main([str(a) for a in args])


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    return err.strip().splitlines()[-1] if err.strip() else ""


# ------------------------------------------------------------------------------ Ctrl-C
@pytest.mark.slow
def test_ctrl_c_saves_prints_the_resume_command_and_resuming_equals_an_uninterrupted_run(
    interrupted_config, reference_run, tmp_path
):
    run = tmp_path / "run"
    proc = _start("--config", interrupted_config, "--out", run, "--device", "cpu")
    _wait_for(lambda: _lines(run / "log.jsonl") >= 2, proc)
    # A terminal's Ctrl-C: SIGINT to the whole process group (the DataLoader process included).
    os.killpg(proc.pid, signal.SIGSTOP)
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err

    ckpt = load_checkpoint(run / "checkpoints" / "last.pth")
    stopped = ckpt["iteration"]
    assert 2 <= stopped < ITERATIONS
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == list(range(1, stopped + 1))
    assert _temporaries(run / "checkpoints") == []
    lines = err.splitlines()
    assert "SIGINT: stopping after the current iteration and saving last.pth (Ctrl-C again, more than 1 s later, aborts without saving)" in lines
    i = lines.index(f"stopped at iteration {stopped} (SIGINT), {run}/checkpoints/last.pth saved; continue with:")
    command = shlex.split(lines[i + 1])
    assert command == ["python", str(CLI), "--config", str(interrupted_config), "--out", str(run), "--device", "cpu", "--resume"]
    assert "Traceback" not in err

    resumed = subprocess.run([sys.executable, *command[1:]], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_training(reference_run, run)


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_schedulers_signal_to_the_process_group_saves_and_resuming_equals_an_uninterrupted_run(
    signum, status, interrupted_config, reference_run, tmp_path
):
    """SLURM, systemd and ``kill -TERM -- -PGID`` signal every process of the job: the loader
    process too, which must outlive the signal until the trainer has saved and stops it."""
    run = tmp_path / "run"
    proc = _start("--config", interrupted_config, "--out", run, "--device", "cpu")
    _wait_for(lambda: _lines(run / "log.jsonl") >= 2, proc)
    os.killpg(proc.pid, signum)  # as the scheduler sends it: to each process, whatever it is doing
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err
    name = signal.Signals(signum).name

    stopped = load_checkpoint(run / "checkpoints" / "last.pth")["iteration"]
    assert 2 <= stopped < ITERATIONS
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == list(range(1, stopped + 1))
    assert _temporaries(run / "checkpoints") == []
    lines = err.splitlines()
    assert f"{name}: stopping after the current iteration and saving last.pth" in lines
    assert f"stopped at iteration {stopped} ({name}), {run}/checkpoints/last.pth saved; continue with:" in lines
    assert "Traceback" not in err and "killed by signal" not in err
    _wait_for_no_process_in_group(proc.pid)  # the loader process was stopped, not left behind

    resumed = _run("--config", interrupted_config, "--out", run, "--device", "cpu", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_training(reference_run, run)


def _wait_for_no_process_in_group(pgid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail(f"processes of the run's group {pgid} outlived it")
        time.sleep(0.05)


def test_the_exit_status_of_a_schedulers_stop_can_be_chosen(tiny_yaml, tmp_path, monkeypatch, capsys):
    """A site whose scheduler requeues on its own status (SLURM's ``RequeueExit=``) sets it."""
    from pointseg.cli import train as train_cli

    def stop_at_once(self):  # as if SLURM's SIGUSR1 came during the first step
        self.request_stop("SIGUSR1")
        return real_train(self)

    real_train = Trainer.train
    monkeypatch.setattr(Trainer, "train", stop_at_once)
    argv = ["--config", tiny_yaml, "--out", tmp_path / "run", "--device", "cpu"]
    assert _train_main(*argv, "--requeue-exit-code", "99") == 99
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")["iteration"] == 1
    assert _train_main(*argv, "--resume") == 138
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")["iteration"] == 2
    capsys.readouterr()
    assert _train_main(*argv, "--resume", "--requeue-exit-code", "0") == 2
    assert _last_error(capsys) == "error: --requeue-exit-code must be 1..255, an exit status that is not success (got 0)"
    assert train_cli.stop_status("SIGINT", 99) == 130  # a person's Ctrl-C keeps the shell's status


@pytest.fixture(scope="module")
def soak_config(data_root, tmp_path_factory) -> Path:
    """The interrupted runs' config over more iterations, without validation (the stops are the
    point here)."""
    register_tiny_backbone()
    cfg = tiny_config(data_root, **{**INTERRUPTED, "iterations": SOAK_ITERATIONS, "val_every": 0})
    cfg.data.num_workers = 1
    path = tmp_path_factory.mktemp("soak") / "tiny.yaml"
    OmegaConf.save(cfg, path)
    return path


SOAK_ITERATIONS = 16


@pytest.mark.slow
def test_a_run_preempted_at_random_iterations_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(
    soak_config, tmp_path, tiny_backbone
):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from bench_preemption import differing_tensors, interrupt_and_resume
    finally:
        sys.path.remove(str(REPO / "bench"))
    reference = tmp_path / "reference"
    Trainer(load_config(soak_config), reference, device="cpu").train()
    run = tmp_path / "run"
    seed = int.from_bytes(os.urandom(4), "little")  # other iterations each time; printed if it fails
    stops = interrupt_and_resume(_command("--config", soak_config, "--out", run, "--device", "cpu"), run,
                                 SOAK_ITERATIONS, 3, np.random.default_rng(seed), env=_env(), timeout=300)
    assert len(stops) == 3 and stops == sorted(set(stops)) and stops[-1] < SOAK_ITERATIONS, (seed, stops)
    assert differing_tensors(reference / "checkpoints" / "last.pth", run / "checkpoints" / "last.pth") == [], (seed, stops)
    assert load_checkpoint(run / "checkpoints" / "last.pth")["iteration"] == SOAK_ITERATIONS
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == list(range(1, SOAK_ITERATIONS + 1))


def test_a_second_ctrl_c_aborts_at_once_with_one_line(monkeypatch, capsys):
    from pointseg.cli import train as train_cli
    from pointseg.cli.common import run_command

    class Training:
        is_main = True
        requests: list[str] = []

        def request_stop(self, reason: str) -> None:
            self.requests.append(reason)

    training = Training()

    def command(argv: list[str]) -> int:
        previous = train_cli.install_stop_handlers(training)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: a request to stop after the step
            os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C, forwarded by torchrun
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's SIGTERM
            assert training.requests == ["SIGINT"]
            monkeypatch.setattr(train_cli, "SAME_REQUEST_S", 0.0)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again: abort now
            time.sleep(5)
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    assert run_command(command, []) == 130
    assert capsys.readouterr().err.splitlines() == [
        "SIGINT: stopping after the current iteration and saving last.pth (Ctrl-C again, more than 1 s later, aborts without saving)",
        "error: interrupted",
    ]


# ------------------------------------------------------------------------------ one writer
@pytest.mark.slow
def test_a_second_training_into_the_same_folder_is_refused_and_the_first_finishes_untouched(
    interrupted_config, reference_run, tmp_path, tiny_backbone, capsys
):
    run = tmp_path / "run"
    first = _start("--config", interrupted_config, "--out", run, "--device", "cpu")
    _wait_for(lambda: _lines(run / "log.jsonl") >= 1, first)
    os.killpg(first.pid, signal.SIGSTOP)  # keep it mid-run, holding the folder
    try:
        for extra in ([], ["--resume"], ["--overwrite"]):  # the second command, run here (faster)
            assert _train_main("--config", interrupted_config, "--out", run, "--device", "cpu", "seed=99", *extra) == 2
            assert capsys.readouterr().err == f"error: {run}: another training (pid {first.pid}) is writing to this run folder\n"
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert OmegaConf.load(run / "config.yaml").seed == 3  # the first run's, not seed=99
    _assert_same_training(reference_run, run)


def test_folder_lock_names_its_holder_and_a_dead_holder_blocks_nobody(tmp_path):
    folder = tmp_path / "run"
    lock = FolderLock(folder).acquire()
    assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(FolderBusyError) as refused:
        FolderLock(folder).acquire()
    assert str(refused.value) == f"{folder}: another training (pid {os.getpid()}) is writing to this run folder"
    lock.release()
    FolderLock(folder).acquire().release()

    code = "import sys, time; from pointseg.utils.lock import FolderLock; FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderBusyError, match=rf"\(pid {holder.pid}\)"):
            FolderLock(folder, what="preprocessing", noun="output folder").acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert (folder / ".lock").read_text() == f"{holder.pid}\n"  # the stale file stays ...
    FolderLock(folder).acquire().release()  # ... and blocks nobody


def test_a_fresh_run_over_checkpoints_needs_resume_or_overwrite(tiny_yaml, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--config", tiny_yaml, "--out", run, "--device", "cpu", "train.iterations=2"]
    assert _train_main(*argv) == 0
    (run / "eval_val").mkdir()
    (run / "eval_val" / "metrics.json").write_text("{}")  # not the training's: --overwrite keeps it
    capsys.readouterr()

    assert _train_main(*argv) == 2
    assert _last_error(capsys) == (
        f"error: {run}/checkpoints: the run folder already holds checkpoints (best.pth, last.pth); "
        "pass --resume to continue it, --overwrite to start again, or choose another --out"
    )
    assert _train_main(*argv, "--resume", "--overwrite") == 2
    assert _last_error(capsys) == (
        "error: --resume continues the run folder's checkpoint, --overwrite deletes it: choose one"
    )
    assert _train_main(*argv[:-1], "train.iterations=1", "--overwrite") == 0
    assert load_checkpoint(run / "checkpoints" / "last.pth")["iteration"] == 1
    assert [r["iteration"] for r in read_jsonl(run / "log.jsonl")] == [1]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert (run / "eval_val" / "metrics.json").read_text() == "{}"


def test_a_training_removes_the_temporaries_of_a_killed_save(tiny_yaml, tmp_path, caplog):
    run = tmp_path / "run"
    argv = ["--config", tiny_yaml, "--out", run, "--device", "cpu", "train.iterations=2"]
    assert _train_main(*argv) == 0
    left = [run / "checkpoints" / ".last.pth.k3j4h5g6.tmp", run / ".config.yaml.a1b2c3d4.tmp"]
    for path in left:
        path.write_bytes(b"partial")
    others = run / ".metrics.json.zz99yy88.tmp"  # not the training's: an evaluation's
    others.write_text("{")
    with caplog.at_level("INFO", logger="pointseg.engine.trainer"):
        assert _train_main(*argv[:-1], "train.iterations=3", "--resume") == 0
    assert f"{run}: removed 2 temporary file(s) an interrupted save left" in caplog.messages
    assert not any(p.exists() for p in left) and others.exists()
    assert load_checkpoint(run / "checkpoints" / "last.pth")["iteration"] == 3


# ------------------------------------------------------------------------------ validation faults
def _broken_scene_copy(data_root: Path, tmp_path: Path, scene: str = "val/scene0100_00") -> tuple[Path, str]:
    """A copy of the data in which ``scene`` has a truncated coord.npy, and the loader's message."""
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    broken = data / scene / "coord.npy"
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(ValueError) as e:
        load_npy(broken)
    return data, str(e.value)


@pytest.mark.slow
def test_an_unreadable_val_scene_keeps_the_checkpoint_and_training_goes_on(data_root, tiny_yaml, tmp_path):
    data, problem = _broken_scene_copy(data_root, tmp_path)
    run = tmp_path / "run"
    proc = _run(
        "--config", tiny_yaml, "--out", run, "--device", "cpu", f"data.root={data}",
        "train.iterations=4", "train.save_every=2", "train.val_every=2",
    )
    assert proc.returncode == 0, proc.stderr
    for it in (2, 4):
        assert (
            f"warning: iteration {it}: validation failed: {problem}; training goes on (traceback in {run}/errors.log)"
            in proc.stderr.splitlines()
        )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pth"]  # no best: nothing validated
    last = load_checkpoint(run / "checkpoints" / "last.pth")
    assert last["iteration"] == 4 and last["val_pending"] is False
    assert read_jsonl(run / "val.jsonl") == [
        {"iteration": it, "error": f"iteration {it}: validation failed: {problem}"} for it in (2, 4)
    ]
    errors = (run / "errors.log").read_text()
    headers = [line for line in errors.splitlines() if line.startswith("=== ")]
    assert [h.split(" ", 3)[3] for h in headers] == [f"iteration {it}: validation failed: {problem}" for it in (2, 4)]
    assert "Traceback (most recent call last)" in errors and "in load_npy" in errors


def test_stop_on_val_error_stops_with_the_checkpoint_of_that_iteration_and_resume_validates_it(
    data_root, tiny_yaml, tmp_path, capsys
):
    data, problem = _broken_scene_copy(data_root, tmp_path)
    run = tmp_path / "run"
    argv = ["--config", tiny_yaml, "--out", run, "--device", "cpu", f"data.root={data}", "train.iterations=4",
            "train.save_every=0", "train.val_every=2", "train.stop_on_val_error=true"]
    assert _train_main(*argv) == 1
    assert _last_error(capsys) == (
        f"error: iteration 2: validation failed: {problem} (train.stop_on_val_error: stopped with "
        f"{run}/checkpoints/last.pth saved; --resume validates this iteration again)"
    )
    last = load_checkpoint(run / "checkpoints" / "last.pth")
    assert last["iteration"] == 2 and last["val_pending"] is True

    shutil.copy(data_root / "val" / "scene0100_00" / "coord.npy", data / "val" / "scene0100_00" / "coord.npy")
    assert _train_main(*argv, "--resume") == 0
    records = read_jsonl(run / "val.jsonl")
    assert [r["iteration"] for r in records] == [2, 4] and all("miou" in r for r in records)


def test_out_of_memory_during_validation_names_the_scene(data_root, tmp_path, tiny_backbone):
    trainer = Trainer(tiny_config(data_root, iterations=2, save_every=2, val_every=2), tmp_path / "run")
    forward = trainer.model.forward

    def forward_oom(batch):
        if not trainer.model.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(batch)

    trainer.model.forward = forward_oom
    assert trainer.train()["iteration"] == 2
    assert read_jsonl(tmp_path / "run" / "val.jsonl") == [
        {"iteration": 2, "error": "iteration 2: validation failed: scene scene0100_00: CUDA out of memory. Tried to allocate 2.00 GiB"}
    ]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")["iteration"] == 2


# ------------------------------------------------------------------------------ full disk
class _FullDisk:
    """A file on a disk with ``room`` bytes left: writes beyond it fail with ENOSPC."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tiny_yaml, tmp_path, monkeypatch, capsys):
    real_open = open
    opened = []

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        opened.append(path)
        return f if len(opened) == 1 else _FullDisk(f, room=100_000)  # the first checkpoint fits

    monkeypatch.setattr(checkpoint_module, "open", open_on_a_filling_disk, raising=False)
    run = tmp_path / "run"
    assert _train_main("--config", tiny_yaml, "--out", run, "--device", "cpu", "train.save_every=2") == 2
    assert _last_error(capsys) == f"error: {run}/checkpoints/last.pth: no space left on device"
    assert len(opened) == 2
    assert load_checkpoint(run / "checkpoints" / "last.pth")["iteration"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pth"]  # no temporary left


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_real_full_disk_during_a_save_keeps_the_previous_checkpoint(tiny_yaml, small_disk):
    run = small_disk / "run"
    proc = _start("--config", tiny_yaml, "--out", run, "--device", "cpu", "train.iterations=100", "train.save_every=2")
    _wait_for(lambda: (run / "checkpoints" / "last.pth").exists(), proc)
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        saved = load_checkpoint(run / "checkpoints" / "last.pth")["iteration"]
        with open(small_disk / "filler", "wb") as f:  # fill the disk, then leave room for the logs
            try:
                while True:
                    f.write(b"\0" * 2**16)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        os.truncate(small_disk / "filler", os.path.getsize(small_disk / "filler") - 2**18)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert err.strip().splitlines()[-1] == f"error: {run}/checkpoints/last.pth: no space left on device"
    assert load_checkpoint(run / "checkpoints" / "last.pth")["iteration"] == saved
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pth"]


# ------------------------------------------------------------------------------ config, data, checkpoint errors
@pytest.mark.parametrize(
    "value, message",
    [("0", "data.voxel_size must be > 0 (got 0.0)"), ("abc", "data.voxel_size: Value 'abc' of type 'str' could not be converted to Float")],
)
def test_a_bad_voxel_size_is_one_line_naming_the_file_and_the_key(value, message, tiny_yaml, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_yaml.read_text().replace("voxel_size: 0.05", f"voxel_size: {value}"))
    assert _train_main("--config", bad, "--out", tmp_path / "run", "--device", "cpu") == 2
    assert capsys.readouterr().err == f"error: {bad}: {message}\n"
    assert not (tmp_path / "run").exists()


def test_an_empty_loss_list_is_an_error_not_the_default_loss(tiny_yaml, tmp_path, capsys):
    assert _train_main("--config", tiny_yaml, "--out", tmp_path / "run", "loss=[]") == 2
    assert capsys.readouterr().err == "error: command line: loss must name at least one loss (got [])\n"


@pytest.mark.parametrize(
    "counts, problem",
    [(5, "expected a list or an object of counts, got int"), ([1, 2], "expected 200 counts, got 2")],
)
def test_bad_stats_json_is_one_line_through_the_train_command(counts, problem, data_root, tiny_yaml, tmp_path, capsys):
    """The released CeCo head (the tiny config's) reads its class prior from DATA/stats.json."""
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    (data / "stats.json").write_text(json.dumps({"splits": {"train": {"class_point_counts": counts, "class_scene_counts": counts}}}))
    assert _train_main("--config", tiny_yaml, "--out", tmp_path / "run", "--device", "cpu", f"data.root={data}") == 2
    assert _last_error(capsys) == f"error: {data}/stats.json: splits.train.class_point_counts: {problem}"


def test_an_unreadable_train_scene_in_a_loader_process_is_one_line(data_root, tiny_yaml, tmp_path, capsys):
    data, problem = _broken_scene_copy(data_root, tmp_path, "train/scene0001_00")
    argv = ["--config", tiny_yaml, "--out", tmp_path / "run", "--device", "cpu", f"data.root={data}", "data.num_workers=1"]
    assert _train_main(*argv) == 2
    assert _last_error(capsys) == f"error: {problem}"


def _state_dict_diff(model_state: dict, checkpoint_state: dict) -> tuple[int, int, int]:
    """Oracle of a mismatch: tensors the model misses, extra ones, ones of another shape."""
    common = model_state.keys() & checkpoint_state.keys()
    return (
        len(model_state.keys() - checkpoint_state.keys()),
        len(checkpoint_state.keys() - model_state.keys()),
        sum(model_state[k].shape != checkpoint_state[k].shape for k in common),
    )


def test_resuming_with_another_model_is_a_short_error_naming_both_models(tiny_yaml, tmp_path, capsys):
    from pointseg.models.segmentor import build_segmentor

    run = tmp_path / "run"
    argv = ["--config", tiny_yaml, "--out", run, "--device", "cpu", "train.iterations=1"]
    assert _train_main(*argv) == 0
    last = run / "checkpoints" / "last.pth"
    before = last.read_bytes()
    capsys.readouterr()
    assert _train_main(*argv, "--resume", "model.name=MinkUNet14S") == 2
    line = _last_error(capsys)

    cfg = load_config(tiny_yaml, ["model.name=MinkUNet14S"])
    missing, unexpected, shaped = _state_dict_diff(build_segmentor(cfg, train=True).state_dict(), load_checkpoint(last)["model"])
    assert missing and shaped and not unexpected  # a wider backbone, with downsampling where Tiny has none
    assert line.startswith(
        f"error: {last}: the weights do not fit the configured model: the checkpoint holds a MinkUNetTiny, "
        f"the config asks for MinkUNet14S: {missing} tensors of the model are not in the checkpoint ("
    )
    assert f"); {shaped} differ in shape (" in line and "of the checkpoint are not in the model" not in line
    assert line.endswith(" (--debug lists every tensor)") and len(line) < 600
    assert last.read_bytes() == before  # nothing was written

    with pytest.raises(ValueError) as debug:  # --debug: the traceback, torch's whole list as its cause
        _train_main(*argv, "--resume", "model.name=MinkUNet14S", "--debug")
    assert isinstance(debug.value.__cause__, RuntimeError) and len(str(debug.value.__cause__)) > 10 * len(line)
    assert last.read_bytes() == before


def test_evaluating_with_another_model_is_a_short_error(data_root, tmp_path, tiny_backbone, capsys):
    from pointseg.models.segmentor import build_segmentor

    cfg = tiny_config(data_root)
    ckpt = tmp_path / "tiny.pth"
    save_checkpoint({"model": build_segmentor(cfg, train=False).state_dict(), "config": to_plain_dict(cfg)}, ckpt)
    out = tmp_path / "eval"
    argv = ["--checkpoint", ckpt, "--split", "val", "--out", out, "--device", "cpu", "model.num_classes=20"]
    assert _test_main(*argv) == 2
    line = _last_error(capsys)
    missing, unexpected, shaped = _state_dict_diff(
        build_segmentor(config_from_dict(to_plain_dict(cfg), ["model.num_classes=20"]), train=False).state_dict(),
        load_checkpoint(ckpt)["model"],
    )
    assert (missing, unexpected) == (0, 0) and shaped >= 1
    assert line.startswith(
        f"error: {ckpt}: the weights do not fit the configured model: model.num_classes is 200 in the checkpoint, "
        f"20 in the config: {shaped} differ in shape (classifier.weight: (200, "
    ), line
    assert len(line) < 400 and not out.exists()

    assert _test_main(*argv[:-1], "model.name=MinkUNet14S") == 2
    line = _last_error(capsys)
    assert "the checkpoint holds a MinkUNetTiny, the config asks for MinkUNet14S: " in line and len(line) < 600

    # the other way round: a checkpoint of the bigger model evaluated as the tiny one
    big = tmp_path / "big.pth"
    cfg.model.name = "MinkUNet14S"
    save_checkpoint({"model": build_segmentor(cfg, train=False).state_dict(), "config": to_plain_dict(cfg)}, big)
    assert _test_main("--checkpoint", big, *argv[2:-1], "model.name=MinkUNetTiny") == 2
    line = _last_error(capsys)
    assert "the checkpoint holds a MinkUNet14S, the config asks for MinkUNetTiny: " in line
    assert " tensors of the model are not in the checkpoint " not in line and "of the checkpoint are not in the model (" in line


def test_a_broken_checkpoint_on_resume_is_one_line(tiny_yaml, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--config", tiny_yaml, "--out", run, "--device", "cpu", "train.iterations=1"]
    assert _train_main(*argv) == 0
    last = run / "checkpoints" / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["rng"]
    torch.save(ckpt, last)
    capsys.readouterr()
    assert _train_main(*argv, "--resume") == 2
    assert _last_error(capsys) == f"error: {last}: cannot resume from this checkpoint (KeyError: rng)"

    last.write_bytes(b"garbage")
    assert _train_main(*argv, "--resume") == 2
    line = _last_error(capsys)
    assert line.startswith(f"error: {last}: cannot load checkpoint (UnpicklingError: ") and "Weights only load failed" not in line


# ------------------------------------------------------------------------------ evaluation
@pytest.fixture
def twenty_class_checkpoint(data_root, tmp_path, tiny_backbone) -> Path:
    """An evaluation checkpoint of a 20-class model (another label set than the data's)."""
    from pointseg.models.segmentor import build_segmentor

    cfg = tiny_config(data_root)
    cfg.model.num_classes = 20
    cfg.ceco.enabled = False
    torch.manual_seed(0)
    path = tmp_path / "twenty.pth"
    save_checkpoint({"model": build_segmentor(cfg, train=False).state_dict(), "config": to_plain_dict(cfg)}, path)
    return path


def _test_main(*args: object) -> int:
    from pointseg.cli.evaluate import main

    return main([str(a) for a in args])


def test_a_checkpoint_of_another_label_set_is_refused(twenty_class_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _test_main("--checkpoint", twenty_class_checkpoint, "--split", "val", "--out", out, "--device", "cpu") == 2
    assert capsys.readouterr().err == (
        f"error: {twenty_class_checkpoint}: the checkpoint predicts 20 classes, the data holds ScanNet200 labels "
        '(200 classes); map its classes with --label-map FILE.json ({"<model class index>": <ScanNet200 class index>, ...})\n'
    )
    assert not out.exists()


def test_a_label_map_scores_the_mapped_predictions_on_the_200_classes(data_root, twenty_class_checkpoint, tmp_path):
    from pointseg import meta

    label_map = {str(i): int(CLASSES[i % len(CLASSES)]) for i in range(20)}
    (tmp_path / "map.json").write_text(json.dumps(label_map))
    out = tmp_path / "eval"
    argv = ["--checkpoint", twenty_class_checkpoint, "--split", "val", "--out", out, "--device", "cpu",
            "--label-map", tmp_path / "map.json", "--save-predictions"]
    assert _test_main(*argv) == 0
    # oracle: the confusion of the written predictions (ScanNet ids) against the ground truth
    gt = np.load(data_root / "val" / "scene0100_00" / "segment200.npy")
    ids = np.loadtxt(out / "predictions" / "scene0100_00.txt", dtype=np.int64)
    pred = meta.class_table().to_index(ids)
    assert set(np.unique(pred)) <= set(CLASSES)
    expected = np.zeros((201, 201), dtype=np.int64)
    np.add.at(expected, (gt[gt >= 0], pred[gt >= 0]), 1)
    confusion = np.load(out / "confusion.npz")["confusion"]
    assert confusion.shape == (201, 201)
    assert np.array_equal(confusion, expected)


@pytest.mark.parametrize(
    "content, problem",
    [
        ({str(i): 0 for i in range(19)}, "the checkpoint predicts 20 classes, the label map maps 19"),
        ({**{str(i): 0 for i in range(20) if i != 7}, "20": 0}, "model class 7 is not mapped (the keys must be 0..K-1, every class of the model)"),
        ({**{str(i): 0 for i in range(19)}, "19": 200}, "class 19 maps to 200, not a ScanNet200 class index 0..199"),
        ({**{str(i): 0 for i in range(19)}, "x": 3}, "key 'x' is not a model class index"),
    ],
)
def test_a_bad_label_map_is_one_line(content, problem, twenty_class_checkpoint, tmp_path, capsys):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(content))
    argv = ["--checkpoint", twenty_class_checkpoint, "--split", "val", "--out", tmp_path / "eval", "--device", "cpu",
            "--label-map", path]
    assert _test_main(*argv) == 2
    where = twenty_class_checkpoint if problem.startswith("the checkpoint") else path
    assert capsys.readouterr().err == f"error: {where}: {problem}\n"


@pytest.fixture
def tiny_checkpoint(data_root, tmp_path, tiny_backbone) -> Path:
    """An evaluation checkpoint of the tiny model, untrained (what it predicts does not matter)."""
    from pointseg.models.segmentor import build_segmentor

    cfg = tiny_config(data_root)
    torch.manual_seed(0)
    path = tmp_path / "tiny.pth"
    save_checkpoint({"model": build_segmentor(cfg, train=False).state_dict(), "config": to_plain_dict(cfg)}, path)
    return path


SUMMARY = ("metrics.json", "confusion.npz", "per_class_iou.png")


def _evaluated(checkpoint: Path, data_root: Path, out: Path, capsys) -> dict[str, bytes]:
    """A good evaluation in ``out``; the bytes of its summary files."""
    assert _test_main("--checkpoint", checkpoint, "--split", "val", "--out", out, "--device", "cpu", "--no-fragments",
                      f"data.root={data_root}") == 0
    capsys.readouterr()
    return {name: (out / name).read_bytes() for name in SUMMARY}


@pytest.mark.parametrize("fault", ["no segment200.npy", "no labelled point"])
def test_an_evaluation_that_scores_nothing_leaves_the_earlier_one_untouched(fault, tiny_checkpoint, data_root, tmp_path, capsys):
    out = tmp_path / "eval"
    before = _evaluated(tiny_checkpoint, data_root, out, capsys)
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    segment = data / "val" / "scene0100_00" / "segment200.npy"
    if fault == "no segment200.npy":
        segment.unlink()
    else:
        np.save(segment, np.full_like(np.load(segment), -1))
    argv = ["--checkpoint", tiny_checkpoint, "--split", "val", "--out", out, "--device", "cpu", "--no-fragments", f"data.root={data}"]
    assert _test_main(*argv) == 1
    err = capsys.readouterr().err.splitlines()
    if fault == "no segment200.npy":
        assert "error: scene scene0100_00 failed: no segment200.npy: a labelled split needs ground truth" in err
        assert "1 of 1 scenes failed" in err
    assert f"error: no labelled point was scored; nothing written to {out}" in err
    assert {name: (out / name).read_bytes() for name in SUMMARY} == before
    assert _temporaries(out) == []


def test_a_summary_that_cannot_be_completed_replaces_none_of_the_earlier_files(
    tiny_checkpoint, data_root, tmp_path, monkeypatch, capsys
):
    from pointseg.evaluation import tester

    out = tmp_path / "eval"
    before = _evaluated(tiny_checkpoint, data_root, out, capsys)

    def full_disk(metrics, path):  # the last of the three files
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(tester, "plot_per_class_iou", full_disk)
    assert _test_main("--checkpoint", tiny_checkpoint, "--split", "val", "--out", out, "--device", "cpu", "--no-fragments",
                      f"data.root={data_root}") == 2
    assert _last_error(capsys) == f"error: {out}/per_class_iou.png: no space left on device"
    assert {name: (out / name).read_bytes() for name in SUMMARY} == before
    assert _temporaries(out) == []


@pytest.fixture
def read_only_folder(tmp_path):
    """An existing folder nobody can write into: chmod, or for root a read-only tmpfs."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("root ignores permissions and cannot mount a read-only tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _no_prediction(monkeypatch) -> None:
    from pointseg.evaluation import tester

    def predicted(*args, **kwargs):
        pytest.fail("a scene was predicted before the output folder was checked")

    monkeypatch.setattr(tester, "predict_scene", predicted)


def test_evaluating_into_a_file_fails_before_predicting_naming_the_folder(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    _no_prediction(monkeypatch)
    out = tmp_path / "eval"
    out.write_text("notes")
    assert _test_main("--checkpoint", tiny_checkpoint, "--split", "val", "--out", out, "--device", "cpu") == 2
    assert _last_error(capsys) == f"error: {out}: exists as a file, not a folder"
    assert _test_main("--checkpoint", tiny_checkpoint, "--split", "val", "--out", out / "sub", "--device", "cpu") == 2
    assert _last_error(capsys) == f"error: {out / 'sub'}: cannot be created: {out} is a file"
    assert out.read_text() == "notes"


def test_evaluating_into_a_read_only_folder_fails_before_predicting_naming_the_folder(
    tiny_checkpoint, read_only_folder, monkeypatch, capsys
):
    _no_prediction(monkeypatch)
    assert _test_main("--checkpoint", tiny_checkpoint, "--split", "val", "--out", read_only_folder, "--device", "cpu") == 2
    assert _last_error(capsys) in (f"error: {read_only_folder}: Permission denied", f"error: {read_only_folder}: Read-only file system")


def test_a_broken_checkpoint_is_one_line_in_the_test_command(tmp_path, capsys):
    ckpt = tmp_path / "broken.pth"
    ckpt.write_bytes(b"garbage")
    assert _test_main("--checkpoint", ckpt, "--split", "val", "--out", tmp_path / "eval", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {ckpt}: cannot load checkpoint (UnpicklingError: ")


def test_validate_submission_with_a_wrong_raw_folder_is_one_error(tmp_path, capsys):
    from pointseg.cli.validate_submission import main

    wrong = tmp_path / "WRONG"
    assert main([str(tmp_path / "submission.zip"), "--raw", str(wrong)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {wrong}: no scans_test/ folder: not a raw ScanNet v2 release with the test scans\n"


@pytest.mark.parametrize("scene", ["../train/scene0000_00", "/tmp/scene0000_00", "val/scene0100_00", ".."])
def test_visualize_refuses_a_scene_path_and_writes_nothing(scene, data_root, tmp_path, capsys):
    from pointseg.cli.visualize import main

    before = sorted(p.relative_to(data_root) for p in data_root.rglob("*"))
    out = tmp_path / "out"
    assert main(["--data", str(data_root), "--split", "val", "--scene", scene, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {scene!r}: not a scene name (a folder name such as scene0000_00, not a path)\n"
    assert not out.exists() and sorted(tmp_path.iterdir()) == []
    assert sorted(p.relative_to(data_root) for p in data_root.rglob("*")) == before


# ------------------------------------------------------------------------------ preprocessing
@pytest.fixture
def small_release(tmp_path) -> Path:
    from raw_helpers import make_release, write_grid_scene

    raw = make_release(tmp_path / "raw", train=["scene0000_00"], val=["scene0002_00"])
    write_grid_scene(raw / "scans", "scene0000_00")
    write_grid_scene(raw / "scans", "scene0002_00")
    return raw


def _preprocess_main(*args: object) -> int:
    from pointseg.cli.preprocess import main

    return main([str(a) for a in args] + ["--no-progress"])


def test_preprocessing_removes_the_temporaries_of_a_killed_run(small_release, tmp_path, caplog):
    from pointseg.utils.io import atomic_path

    out = tmp_path / "data"
    assert _preprocess_main("--raw", small_release, "--out", out) == 0
    # What a run killed while writing leaves: atomic_path's temporaries (entered, never left).
    left = []
    for target in (out / "train" / "scene0000_00", out / "val" / "scene0002_00", out / "stats.json"):
        tmp = atomic_path(target).__enter__()
        tmp.mkdir() if target.suffix != ".json" else tmp.write_text("{")
        left.append(tmp)
    assert all(p.exists() for p in left)
    with caplog.at_level("INFO", logger="pointseg.preprocessing.preprocess"):
        assert _preprocess_main("--raw", small_release, "--out", out, "--overwrite") == 0
    assert f"{out}: removed 3 temporary file(s) or folder(s) an interrupted run left" in caplog.messages
    assert not any(p.exists() for p in left)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["scene0000_00"]


def test_preprocessing_prints_the_summary_then_one_error_when_stats_cannot_be_written(
    small_release, tmp_path, monkeypatch, capsys
):
    from pointseg.preprocessing import preprocess

    out = tmp_path / "data"

    def read_only(root, *args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(root) / "stats.json"))

    monkeypatch.setattr(preprocess, "write_stats", read_only)
    assert _preprocess_main("--raw", small_release, "--out", out) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("scenes done: 2, skipped (already finished): 0, failed: 0\n")
    assert captured.err.strip().splitlines()[-1] == f"error: {out}/stats.json: Permission denied"


def test_preprocessing_into_a_read_only_folder_is_one_line(small_release, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o555)
    elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("root ignores permissions and cannot mount a read-only tmpfs here")
    try:
        assert _preprocess_main("--raw", small_release, "--out", out) == 2
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(out)], capture_output=True)
        else:
            out.chmod(0o755)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err in (f"error: {out}/.lock: Permission denied\n", f"error: {out}/.lock: Read-only file system\n")


def test_a_second_preprocessing_into_the_same_folder_is_refused(small_release, tmp_path, capsys):
    out = tmp_path / "data"
    with FolderLock(out, what="preprocessing", noun="output folder"):
        assert _preprocess_main("--raw", small_release, "--out", out) == 2
    assert capsys.readouterr().err == f"error: {out}: another preprocessing (pid {os.getpid()}) is writing to this output folder\n"
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_preprocessing_warns_of_scenes_without_labels_and_of_aggregations_of_another_scan(tmp_path, capsys):
    """Rows of the grid scene have segment ids 100..103; ids 500.. are in no segs.json."""
    from raw_helpers import UNKNOWN_LABEL, make_release, write_grid_scene

    raw = make_release(tmp_path / "raw", train=["scene0000_00", "scene0001_00", "scene0003_00"], val=["scene0002_00"])
    write_grid_scene(raw / "scans", "scene0000_00")
    write_grid_scene(raw / "scans", "scene0002_00")
    other_scan = [{"id": 0, "segments": [500, 501], "label": "chair"}, {"id": 1, "segments": [502], "label": "wall"}]
    write_grid_scene(raw / "scans", "scene0001_00", groups=other_scan)  # 3 of 3 ids dangling: nothing labelled
    mostly_other = [{"id": 0, "segments": [100], "label": "chair"}, {"id": 1, "segments": [600, 601], "label": "wall"}]
    write_grid_scene(raw / "scans", "scene0002_00", groups=mostly_other)  # 2 of 3 dangling, row 0 labelled
    write_grid_scene(raw / "scans", "scene0003_00", groups=[{"id": 0, "segments": [100, 101], "label": UNKNOWN_LABEL}])

    out = tmp_path / "data"
    assert _preprocess_main("--raw", raw, "--out", out) == 0  # warnings, not failures
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scenes done: 4, skipped (already finished): 0, failed: 0"
    assert "warning: 2 scene(s) have no labelled vertex (every vertex is unlabelled): scene0001_00, scene0003_00" in lines
    for scene, dangling, aggregated in (("scene0001_00", 3, 3), ("scene0002_00", 2, 3)):
        assert (f"warning: {scene}: {dangling} of the {aggregated} segment ids of its aggregation are not in its "
                "segs.json (the two files from different scans?); their vertices are unlabelled") in lines
    assert not any("scene0000_00" in line or "scene0003_00: " in line for line in lines)
    # the oracle: the written labels
    for split, scene, labelled in (("train", "scene0001_00", 0), ("train", "scene0003_00", 0), ("val", "scene0002_00", 4)):
        assert int((np.load(out / split / scene / "segment200.npy") >= 0).sum()) == labelled

    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["train"]["scenes_without_labels"] == ["scene0001_00", "scene0003_00"]
    assert stats["splits"]["train"]["scenes_with_dangling_segments"] == {"scene0001_00": [3, 3]}
    assert stats["splits"]["val"]["scenes_without_labels"] == []
    assert stats["splits"]["val"]["scenes_with_dangling_segments"] == {"scene0002_00": [2, 3]}

    first = (out / "stats.json").read_text()
    assert _preprocess_main("--raw", raw, "--out", out) == 0  # a rerun skips them all ...
    assert (out / "stats.json").read_text() == first  # ... and keeps what the first run found
