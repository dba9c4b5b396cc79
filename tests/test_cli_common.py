"""What the commands share: ``key=value`` overrides anywhere on the line (never an option's value),
one-line errors through ``run_command``, and a clear refusal of ``--device cuda`` without CUDA."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointseg.cli.common import parse_with_overrides, run_command, split_overrides


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint", nargs="+")
    p.add_argument("overrides", nargs="*")
    return p


@pytest.mark.parametrize(
    "argv, rest, overrides",
    [
        (["--config", "c.yaml", "a=1", "--resume", "b.c=2"], ["--config", "c.yaml", "--resume"], ["a=1", "b.c=2"]),
        (["--out", "runs/lr=0.1", "a=1"], ["--out", "runs/lr=0.1"], ["a=1"]),
        (["--out", "lr=0.1", "a=1"], ["--out", "lr=0.1"], ["a=1"]),  # the value --out needs
        (["--out=x=1", "loss.0.weight=2"], ["--out=x=1"], ["loss.0.weight=2"]),
        (["--checkpoint", "a.pth", "b.pth", "model.backend=torch", "--out", "o"], ["--checkpoint", "a.pth", "b.pth", "--out", "o"], ["model.backend=torch"]),
        (["--conf", "c.yaml", "x=1"], ["--conf", "c.yaml"], ["x=1"]),  # an abbreviated option
        (["--resume", "data.root=/d"], ["--resume"], ["data.root=/d"]),  # a flag takes no value
        (["/abs=path", "-1=x"], ["/abs=path", "-1=x"], []),  # not a key
    ],
)
def test_overrides_are_key_words_that_are_no_option_value(argv, rest, overrides):
    assert split_overrides(argv, _parser()) == (rest, overrides)


def test_parse_with_overrides_reads_sys_argv_and_keeps_stray_words_for_the_config_check(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--config", "c.yaml", "a=1", "--resume", "b=2"])
    args = parse_with_overrides(_parser(), None)
    assert (args.config, args.resume, args.overrides) == ("c.yaml", True, ["a=1", "b=2"])
    args = parse_with_overrides(_parser(), ["--config", "c.yaml", "a=1", "stray"])
    assert args.overrides == ["a=1", "stray"]  # apply_override says "stray" is not key=value


def test_train_and_evaluate_take_overrides_after_their_options():
    from pointseg.cli import evaluate, train

    args = train.parse_args(["--config", "c.yaml", "a=1", "--resume", "b=2", "--out", "runs/lr=0.1"])
    assert (args.resume, args.out, args.overrides) == (True, "runs/lr=0.1", ["a=1", "b=2"])
    args = evaluate.parse_args(["--checkpoint", "a.pth", "b.pth", "a=1", "--out", "o", "b=2"])
    assert (args.checkpoint, args.out, args.overrides) == (["a.pth", "b.pth"], "o", ["a=1", "b=2"])


@pytest.mark.parametrize("module", ["visualize", "collapse"])
def test_visualize_and_collapse_take_overrides_after_their_options(module, monkeypatch, tmp_path, capsys):
    """The override after the options reaches the config, which refuses its unknown key by name
    (not argparse's "unrecognized arguments")."""
    import numpy as np

    from pointseg.cli import collapse, visualize

    monkeypatch.setattr(visualize, "load_scene_labels", lambda *a: (np.zeros((1, 3), np.float32), None))
    config = tmp_path / "c.yaml"
    config.write_text("data: {root: /d}\n")
    argv = ["--config", str(config), "nokey=1", "--checkpoint", str(tmp_path / "c.pth"), "--out", str(tmp_path / "o")]
    if module == "visualize":
        argv += ["--data", str(tmp_path), "--scene", "s"]
    main = {"visualize": visualize.main, "collapse": collapse.main}[module]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: command line: override 'nokey=1': no key 'nokey' in the config"
    )


def test_device_cuda_without_cuda_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this torch has a CUDA device")
    from pointseg.engine.distributed import init_distributed

    assert run_command(lambda argv: init_distributed("cuda") and 0, []) == 2
    assert capsys.readouterr().err.strip() == "error: --device cuda: torch has no CUDA device"


# Commands that never touch a tensor: their start must not pay torch's import (about a second).
NO_TORCH_COMMANDS = ("preprocess", "validate_submission", "make_synthetic", "make_longtail")


@pytest.mark.parametrize("name", NO_TORCH_COMMANDS)
def test_commands_that_need_no_torch_do_not_import_it(name):
    root = Path(__file__).resolve().parents[1]
    code = (
        "import contextlib, io, sys\n"
        f"from pointseg.cli.{name} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert out.getvalue().startswith('usage:'), out.getvalue()\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_the_data_package_names_its_functions_also_after_their_modules_are_imported():
    """``pointseg.data`` imports its submodules on first use; ``collate`` and ``voxelize`` name a
    submodule and a function, and the package keeps the functions."""
    import importlib

    importlib.import_module("pointseg.data.collate")
    importlib.import_module("pointseg.data.voxelize")
    from pointseg.data import collate, voxelize
    from pointseg.data.collate import collate as collate_function
    from pointseg.data.voxelize import voxelize as voxelize_function

    assert collate is collate_function and voxelize is voxelize_function
