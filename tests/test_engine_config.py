"""Config loading: the typed schema (unknown keys and bad values rejected naming the file, the key
and the closest known key, in files and overrides alike), inheritance, overrides, provenance,
derived values; optimizers and schedules; every shipped config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pointseg.engine.config import (
    default_run_dir,
    explain_config,
    format_explained,
    load_config,
    schema_markdown,
)
from pointseg.engine.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

BASE = """
seed: 1
data: {root: /data, batch_size: 2, voxel_size: 0.02}
model: {name: MinkUNet14A, backend: torch, num_classes: 200}
loss: [{name: cross_entropy, weight: 1.0}]
optim: {name: SGD, lr: 0.05}
sched: {name: poly}
train: {iterations: 100, log_every: 10}
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_inheritance_merges_bases_in_order_then_the_file(tmp_path):
    _write(tmp_path, "_base_.yaml", BASE)
    _write(tmp_path, "mid.yaml", "_base_: _base_.yaml\ntrain: {iterations: 50}\noptim: {lr: 0.1}\n")
    child = _write(tmp_path, "sub/child.yaml", "_base_: [../mid.yaml]\noptim: {lr: 0.2}\n")
    cfg = load_config(child)
    assert cfg.optim.lr == 0.2  # the file wins over its bases
    assert cfg.train.iterations == 50  # the middle base wins over the root
    assert cfg.train.log_every == 10 and cfg.optim.name == "SGD"  # untouched keys are inherited
    assert "_base_" not in cfg


def test_overrides_parse_yaml_values_and_address_list_items(tmp_path):
    path = _write(tmp_path, "c.yaml", BASE)
    cfg = load_config(
        path,
        ["train.iterations=7", "data.root=/elsewhere", "optim.lr=1e-3", "loss.0.weight=0.5", "sched.milestones=[3, 5]"],
    )
    assert cfg.train.iterations == 7 and isinstance(cfg.train.iterations, int)
    assert cfg.data.root == "/elsewhere"
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.loss[0].weight == 0.5
    assert list(cfg.sched.milestones) == [3, 5]


@pytest.mark.parametrize(
    "section,text,message",
    [
        ("data", "data: {voxle_size: 0.05}", "unknown key 'data.voxle_size'; did you mean 'data.voxel_size'?"),
        ("model", "model: {num_clases: 20}", "unknown key 'model.num_clases'; did you mean 'model.num_classes'?"),
        ("ceco", "ceco: {enabeld: true}", "unknown key 'ceco.enabeld'; did you mean 'ceco.enabled'?"),
        ("optim", "optim: {weight_decy: 0.1}", "unknown key 'optim.weight_decy'; did you mean 'optim.weight_decay'?"),
        ("sched", "sched: {milestone: [3]}", "unknown key 'sched.milestone'; did you mean 'sched.milestones'?"),
        ("train", "train: {iteration: 5}", "unknown key 'train.iteration'; did you mean 'train.iterations'?"),
        ("top", "sed: 3", "unknown key 'sed'; did you mean 'seed'?"),
        ("loss", "loss: [{name: lovaz}]", "loss [0]: unknown name 'lovaz'; did you mean 'lovasz'?"),
        ("transforms", "data: {train_transforms: [{name: RandomScale, scal: 2}]}", "got an unexpected keyword argument 'scal'"),
    ],
)
def test_unknown_keys_in_a_file_name_the_file_the_key_and_the_closest_key(tmp_path, section, text, message):
    _write(tmp_path, "_base_.yaml", BASE)
    path = _write(tmp_path, "typo.yaml", f"_base_: _base_.yaml\n{text}\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert str(err.value).startswith("typo.yaml: ") or "typo.yaml" in str(err.value).split(":")[0]
    assert message in str(err.value)


def test_unknown_and_bad_overrides_are_errors_naming_the_key(tmp_path):
    path = _write(tmp_path, "c.yaml", BASE)
    with pytest.raises(ValueError, match="override 'train.iteration=5': no key 'train.iteration' in the config; did you mean 'train.iterations'"):
        load_config(path, ["train.iteration=5"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(path, ["train.iterations"])
    with pytest.raises(ValueError, match="command line: override 'data.voxel_size=abc': data.voxel_size: Value 'abc'"):
        load_config(path, ["data.voxel_size=abc"])
    with pytest.raises(ValueError, match=r"command line: data.voxel_size must be > 0 \(got 0.0\)"):
        load_config(path, ["data.voxel_size=0"])
    with pytest.raises(ValueError, match=r"command line: model.backend must be auto or one of"):
        load_config(path, ["model.backend=cuda"])


def test_bad_values_in_a_file_name_the_file_and_the_key(tmp_path):
    path = _write(tmp_path, "c.yaml", BASE.replace("root: /data, ", ""))
    with pytest.raises(ValueError, match=r"missing required key 'data.root'"):
        load_config(path)
    _write(tmp_path, "_base_.yaml", BASE)
    for name, text, message in (
        ("d.yaml", "sched: {name: linear}", r"d\.yaml: sched.name must be one of"),
        ("e.yaml", "data: {voxel_size: 0}", r"e\.yaml: data.voxel_size must be > 0 \(got 0.0\)"),
        ("f.yaml", "train: {iterations: 2.5}", r"f\.yaml: train.iterations: Value '2.5' .* could not be converted to Integer"),
        ("g.yaml", "data: {voxel_size: abc}", r"g\.yaml: data.voxel_size: Value 'abc'"),
    ):
        path = _write(tmp_path, name, f"_base_: _base_.yaml\n{text}\n")
        with pytest.raises(ValueError, match=message):
            load_config(path)


def test_a_required_key_is_set_on_the_command_line_or_named_with_the_file(tmp_path):
    path = _write(tmp_path, "no_root.yaml", BASE.replace("root: /data, ", ""))
    assert load_config(path, ["data.root=/elsewhere"]).data.root == "/elsewhere"
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert str(err.value).endswith(
        "no_root.yaml: missing required key 'data.root'; set it in the config or on the command line (data.root=...)"
    )
    with pytest.raises(ValueError, match="no key 'data.rot' in the config; did you mean 'data.root'"):
        load_config(path, ["data.rot=/x"])


def test_in_channels_is_derived_from_the_features(tmp_path):
    path = _write(tmp_path, "c.yaml", BASE)
    assert load_config(path).model.in_channels == 3
    assert load_config(path, ["data.features=[color, normal]"]).model.in_channels == 6
    with pytest.raises(ValueError, match=r"model.in_channels is 3 but data.features \['color', 'normal'\] give 6"):
        load_config(path, ["data.features=[color, normal]", "model.in_channels=3"])


def test_print_config_says_where_each_value_came_from(tmp_path):
    _write(tmp_path, "_base_.yaml", BASE)
    path = _write(tmp_path, "child.yaml", "_base_: _base_.yaml\noptim: {lr: 0.2}\n")
    cfg, sources = explain_config(path, ["train.iterations=9"])
    assert sources["optim.lr"].endswith("child.yaml")
    assert sources["optim.name"].endswith("_base_.yaml (base)")
    assert sources["train.iterations"] == "command line"
    assert sources["optim.momentum"] == "default"
    assert sources["model.in_channels"] == "derived from data.features"
    text = format_explained(cfg, sources)
    assert "train.iterations: 9" in text and "# command line" in text


def test_config_reference_is_up_to_date():
    """docs/config.md is the schema's table: regenerate it with `python tools/train.py --config-reference`."""
    doc = (ROOT / "docs" / "config.md").read_text()
    assert schema_markdown() in doc


def test_circular_inheritance_and_missing_base_are_reported(tmp_path):
    _write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    b = _write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ValueError, match="circular"):
        load_config(b)
    c = _write(tmp_path, "c.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config(c)


def test_default_run_dir_keeps_the_config_folder():
    assert default_run_dir("configs/synthetic/ceco.yaml") == Path("runs/synthetic/ceco")


# ---------------------------------------------------------------- optimizers and schedules
def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_sgd_defaults_are_the_scannet200_baseline():
    opt = build_optimizer(_params(), {"name": "SGD"})
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["dampening"], group["weight_decay"]) == (0.05, 0.9, 0.1, 1e-4)
    adamw = build_optimizer(_params(), {"name": "AdamW", "lr": 2e-3, "betas": [0.9, 0.95]})
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.95)
    assert set(OPTIMIZERS) == {"SGD", "AdamW"}
    with pytest.raises(ValueError, match="optim.name must be one of"):
        build_optimizer(_params(), {"name": "Lion"})


def _lrs(sched_cfg: dict, total: int, lr: float = 1.0) -> list[float]:
    opt = build_optimizer(_params(), {"name": "SGD", "lr": lr})
    sched = build_scheduler(opt, sched_cfg, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_poly_with_linear_warmup_matches_the_closed_form():
    total, warm, ratio, power = 20, 4, 0.1, 0.9
    lrs = _lrs({"name": "poly", "power": power, "warmup_iters": warm, "warmup_ratio": ratio}, total, lr=0.05)
    for it, lr in enumerate(lrs):
        w = ratio + (1 - ratio) * it / warm if it < warm else 1.0
        assert lr == pytest.approx(0.05 * w * (1 - it / total) ** power, rel=1e-12)


def test_multistep_and_onecycle():
    lrs = _lrs({"name": "multistep", "milestones": [5, 8], "gamma": 0.5}, 10)
    assert lrs == [1.0] * 5 + [0.5] * 3 + [0.25] * 2
    lrs = _lrs({"name": "onecycle", "pct_start": 0.25, "div_factor": 10, "final_div_factor": 100}, 40, lr=0.1)
    peak = max(range(40), key=lambda i: lrs[i])
    assert lrs[0] == pytest.approx(0.01) and lrs[peak] == pytest.approx(0.1, rel=1e-3)
    assert 8 <= peak <= 11 and lrs[-1] < lrs[0]
    assert set(SCHEDULERS) == {"poly", "multistep", "onecycle"}
    with pytest.raises(ValueError, match="milestones"):
        _lrs({"name": "multistep", "milestones": [50]}, 10)


# ---------------------------------------------------------------- the shipped configs
def test_configs_exist_for_every_method():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in CONFIGS}
    for folder in ("scannet200", "synthetic"):
        for method in ("baseline", "ceco", "ceco_lovasz", "ceco_dice"):
            assert f"{folder}/{method}.yaml" in names
    assert any(n.startswith("scannet200/table1_") for n in names)
    assert any(n.startswith("scannet200/ceco_lambda_") for n in names)


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.name.startswith("_")], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_config_loads_and_builds_its_segmentor(path, tmp_path):
    import json

    from pointseg.models.segmentor import CENTER_BRANCH_PREFIX, build_segmentor

    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path}: must start with a comment saying what it reproduces"
    assert load_config(path).data.root  # every config names its data
    # The released CeCo head reads the class prior of the training scenes from DATA/stats.json.
    counts = {"class_point_counts": [100] * 200, "class_scene_counts": [3] * 200, "num_scenes": 5}
    (tmp_path / "stats.json").write_text(json.dumps({"splits": {"train": counts}}))
    cfg = load_config(path, ["model.backend=torch", f"data.root={tmp_path}"])
    assert cfg.data.root and cfg.train.iterations > 0
    train_model = build_segmentor(cfg, train=True)
    eval_model = build_segmentor(cfg, train=False)
    assert not any(k.startswith(CENTER_BRANCH_PREFIX) for k in eval_model.state_dict())
    has_branch = any(k.startswith(CENTER_BRANCH_PREFIX) for k in train_model.state_dict())
    assert has_branch == bool(cfg.get("ceco", {}).get("enabled", False))
    build_optimizer(train_model.parameters(), cfg.optim)
    build_scheduler(build_optimizer(train_model.parameters(), cfg.optim), cfg.sched, cfg.train.iterations)
    assert math.isfinite(cfg.optim.lr)
