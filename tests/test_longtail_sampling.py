"""The language-grounded baseline's two sampling methods against hand-made oracles.

Tail-instance pasting: the bank holds exactly the tail instances of hand-built scenes, pasted
points stand on the floor and keep a margin from every other point of the scene (brute-force
distances), carry their bank instance's class and colours, and a sample is a pure function of
(seed, epoch, index). Balanced point sampling: the points that get a gradient, counted per class,
are min(n_c, N), never an ignored one, and the loss is the CE over them computed by hand.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import TINY

from pointseg import meta
from pointseg.data import instance_bank as ib
from pointseg.data.dataset import build_dataset
from pointseg.data.scene import load_scene
from pointseg.data.transforms import PasteTailInstances, build_transforms, default_train_transforms
from pointseg.engine.checkpoint import capture_rng_state, restore_rng_state
from pointseg.engine.config import load_config
from pointseg.losses import build_criteria
from pointseg.losses.cross_entropy import CrossEntropyLoss, balanced_point_subset

ROOT = Path(__file__).resolve().parents[1]
TABLE = meta.class_table()
FLOOR = TABLE.name.index("floor")
WALL = TABLE.name.index("wall")
TAIL = [int(k) for k in np.flatnonzero(TABLE.split_masks["tail"])][:2]
HEAD_OBJECT = TABLE.name.index("table")
FLOOR_Z = 0.3
MARGIN = 0.1


# ---------------------------------------------------------------- scenes with a floor
def _box(rng, low, size, n):
    return np.asarray(low) + rng.uniform(0, 1, (n, 3)) * np.asarray(size)


def write_room(folder: Path, seed: int, tail_boxes: list[tuple[int, int]]) -> None:
    """A 3 x 3 m room: a flat floor at z = FLOOR_Z (a 5 cm grid), a wall along x = 0, a table
    block and a few unlabelled points on the floor; ``tail_boxes`` (class, points) are small
    boxes standing on the floor, each its own instance in its own constant colour."""
    rng = np.random.default_rng(seed)
    g = np.arange(0.0, 3.0, 0.05)
    fx, fy = np.meshgrid(g, g, indexing="ij")
    parts = [(np.stack([fx.ravel(), fy.ravel(), np.full(fx.size, FLOOR_Z)], 1), FLOOR)]
    parts.append((_box(rng, [0, 0, FLOOR_Z], [0.02, 3, 2], 400), WALL))
    parts.append((_box(rng, [1.0, 1.0, FLOOR_Z], [0.8, 0.8, 0.7], 300), HEAD_OBJECT))
    parts.append((_box(rng, [2.2, 0.3, FLOOR_Z], [0.3, 0.3, 0.05], 40), -1))
    for j, (cls, n) in enumerate(tail_boxes):
        parts.append((_box(rng, [0.4 + 0.5 * j, 2.4, FLOOR_Z], [0.2, 0.25, 0.3], n), cls))
    coord = np.concatenate([p for p, _ in parts]).astype(np.float32)
    segment = np.concatenate([np.full(len(p), c) for p, c in parts]).astype(np.int64)
    instance = np.concatenate([np.full(len(p), i) for i, (p, _) in enumerate(parts)]).astype(np.int64)
    instance[segment == -1] = -1
    color = np.zeros((len(coord), 3), dtype=np.uint8)
    for i in range(len(parts)):  # one colour per instance: a pasted point's colour names its bank instance
        color[instance == i] = [(37 * i + 11 * seed) % 256, (91 * i + 50) % 256, 200]
    normal = np.tile(np.array([0, 0, 1], dtype=np.float32), (len(coord), 1))
    folder.mkdir(parents=True)
    for name, array in (("coord", coord), ("color", color), ("normal", normal), ("segment200", segment), ("instance", instance)):
        np.save(folder / f"{name}.npy", array)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rooms")
    write_room(root / "train" / "scene0000_00", 0, [(TAIL[0], 60), (TAIL[1], 50), (TAIL[0], 5)])
    write_room(root / "train" / "scene0001_00", 1, [(TAIL[1], 70)])
    write_room(root / "val" / "scene0100_00", 2, [])
    return root


@pytest.fixture(autouse=True)
def _fresh_process_cache():
    ib._LOADED.clear()
    yield
    ib._LOADED.clear()


def paste(root: Path, **kw) -> PasteTailInstances:
    kw = {"classes": "tail", "max_instances": 3, "probability": 1.0, "margin": MARGIN, "root": str(root), **kw}
    return PasteTailInstances(**kw)


# ---------------------------------------------------------------- the bank
def test_bank_holds_the_tail_instances_normalized(rooms):
    bank = paste(rooms).bank()
    # scene 0: TAIL[0] (60), TAIL[1] (50), TAIL[0] (5 points < min_points 20: left out); scene 1: TAIL[1] (70).
    assert sorted(zip(bank.label.tolist(), np.diff(bank.offsets).tolist())) == sorted(
        [(TAIL[0], 60), (TAIL[1], 50), (TAIL[1], 70)]
    )
    for i in range(len(bank)):
        c = bank.instance(i)["coord"]
        assert c[:, 2].min() == pytest.approx(0.0, abs=1e-6)
        assert (c[:, :2].min(0) + c[:, :2].max(0)) == pytest.approx([0, 0], abs=1e-6)
        assert len(np.unique(bank.instance(i)["color"], axis=0)) == 1
    # Read back from the cache folder (memory-mapped) by a fresh process: the same arrays.
    ib._LOADED.clear()
    again = paste(rooms).bank()
    assert isinstance(again.coord, np.memmap)
    for k in ("coord", "color", "normal", "offsets", "label"):
        np.testing.assert_array_equal(getattr(again, k), getattr(bank, k))
    # A list of classes, and a class nobody has, is a clear error.
    assert paste(rooms, classes=[TAIL[1]]).bank().label.tolist() == [TAIL[1], TAIL[1]]
    with pytest.raises(ValueError, match=r"train: no instance of classes \[5\]"):
        paste(rooms, classes=[5]).bank()
    with pytest.raises(ValueError, match="classes must be one of"):
        paste(rooms, classes="rare")


def test_a_rewritten_scene_rebuilds_the_bank(tmp_path):
    write_room(tmp_path / "train" / "scene0000_00", 0, [(TAIL[0], 60)])
    assert np.diff(paste(tmp_path).bank().offsets).tolist() == [60]
    ib._LOADED.clear()
    import shutil

    shutil.rmtree(tmp_path / "train" / "scene0000_00")
    write_room(tmp_path / "train" / "scene0000_00", 0, [(TAIL[0], 80)])
    assert np.diff(paste(tmp_path).bank().offsets).tolist() == [80]


def test_quantile_classes_by_hand(tmp_path):
    import json

    points = [0] * 200
    for k, n in {0: 1000, 2: 800, 5: 300, 9: 100, 11: 50}.items():
        points[k] = n
    (tmp_path / "stats.json").write_text(json.dumps(
        {"splits": {"train": {"class_point_counts": points, "class_scene_counts": [int(p > 0) for p in points]}}}
    ))
    # np.quantile([50, 100, 300, 800, 1000], 0.25) = 100 (linear rule: position 1 of 0..4).
    assert ib.select_classes("quantile", tmp_path, quantile=0.25) == (9, 11)
    assert ib.select_classes("quantile", tmp_path, quantile=0.5) == (5, 9, 11)
    assert ib.select_classes("tail") == tuple(np.flatnonzero(TABLE.split_masks["tail"]).tolist())
    assert ib.select_classes([7, 3, 7]) == (3, 7)


# ---------------------------------------------------------------- pasting
def _pasted_groups(out: dict, n: int) -> dict[int, np.ndarray]:
    ids = out["instance"][n:]
    return {int(i): n + np.flatnonzero(ids == i) for i in np.unique(ids)}


def test_pasted_points_stand_on_free_floor_with_their_bank_class_and_colours(rooms):
    t = paste(rooms)
    bank = t.bank()
    colour_of = {tuple(bank.instance(i)["color"][0]): (int(bank.label[i]), int(np.diff(bank.offsets)[i])) for i in range(len(bank))}
    scene = load_scene(rooms / "train" / "scene0001_00")
    n = len(scene["coord"])
    obstacles = scene["coord"][scene["segment"] != FLOOR].astype(np.float64)
    floor_xy = scene["coord"][scene["segment"] == FLOOR][:, :2]
    total = 0
    for seed in range(12):
        out = t({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in scene.items()}, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["coord"][:n], scene["coord"])  # the scene itself is untouched
        groups = _pasted_groups(out, n)
        assert len(groups) <= 3 and len(out["segment"]) == len(out["coord"]) == len(out["color"]) == len(out["normal"])
        placed = []
        for rows in groups.values():
            xyz = out["coord"][rows].astype(np.float64)
            # Oracle: brute-force distances to every non-floor point of the scene and to the other pasted instances.
            d = np.sqrt(((xyz[:, None, :] - obstacles[None]) ** 2).sum(-1))
            assert d.min() >= MARGIN - 1e-5
            for other in placed:
                assert np.sqrt(((xyz[:, None, :2] - other[None, :, :2]) ** 2).sum(-1)).min() >= MARGIN - 1e-5
            placed.append(xyz)
            assert xyz[:, 2].min() == pytest.approx(FLOOR_Z, abs=1e-5)  # bottom at floor height
            assert (xyz[:, :2].min(0) >= floor_xy.min(0) - 0.3).all() and (xyz[:, :2].max(0) <= floor_xy.max(0) + 0.3).all()
            colours = np.unique(out["color"][rows], axis=0)
            assert len(colours) == 1
            cls, size = colour_of[tuple(colours[0])]
            assert (out["segment"][rows] == cls).all() and len(rows) == size
            total += 1
    assert total >= 12  # pasting happens (the room has free floor for several instances)


def test_no_floor_or_probability_zero_pastes_nothing(rooms):
    scene = load_scene(rooms / "train" / "scene0001_00")
    n = len(scene["coord"])
    assert len(paste(rooms, probability=0.0)(dict(scene), np.random.default_rng(0))["coord"]) == n
    no_floor = dict(scene, segment=np.where(scene["segment"] == FLOOR, WALL, scene["segment"]))
    assert len(paste(rooms)(no_floor, np.random.default_rng(0))["coord"]) == n
    with pytest.raises(ValueError, match="put PasteTailInstances before ToFeature"):
        paste(rooms)(dict(scene, feat=scene["color"].copy()), np.random.default_rng(0))


def test_same_seed_epoch_index_same_paste_and_another_epoch_another(rooms):
    items = [{"name": "PasteTailInstances", "classes": "tail", "max_instances": 3, "margin": MARGIN}]
    items += [{"name": "NormalizeColor"}, {"name": "ToFeature"}, {"name": "Voxelize"}]
    cfg = {"root": str(rooms), "seed": 4, "voxel_size": 0.05, "train_transforms": items}
    dataset = build_dataset(cfg, "train", "train")
    assert dataset.transforms.transforms[0].root == str(rooms)  # filled from data.root
    a, b = dataset[1], dataset[1]
    ib._LOADED.clear()  # a fresh process (a loader worker, a resumed run) reads the bank from disk
    c = build_dataset(cfg, "train", "train")[1]
    for k in ("coord", "feat", "segment", "grid_coord"):
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    dataset.set_epoch(1)
    d = dataset[1]
    assert len(d["coord"]) != len(a["coord"]) or not np.array_equal(d["coord"], a["coord"])
    with pytest.raises(ValueError, match="PasteTailInstances is a training augmentation"):
        build_dataset(dict(cfg, test_transforms=items), "val", "val")


def _one_train_step(cfg) -> dict[str, torch.Tensor]:
    """One SGD step of the tiny backbone on a batch of the config's training dataset."""
    from pointseg.data.collate import collate
    from pointseg.models.segmentor import build_segmentor

    dataset = build_dataset(cfg.data, "train", "train")
    batch = collate([dataset[i] for i in range(len(dataset))])
    torch.manual_seed(0)
    model = build_segmentor(cfg, train=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = model(batch)
    out["loss"].backward()
    opt.step()
    assert torch.isfinite(out["loss"]) and torch.isfinite(model.classifier.weight.grad).all()
    return out


def _arm_config(name: str, root: Path, *overrides: str):
    path = ROOT / "configs" / "longtail" / f"{name}.yaml"
    assert path.read_text().startswith("# Long-tailed")
    return load_config(path, [f"data.root={root}", f"model.name={TINY}", "model.backend=torch", *overrides])


def test_instance_paste_config_is_the_baseline_pipeline_plus_pasting_and_trains(rooms, tiny_backbone):
    cfg = _arm_config("instance_paste", rooms, "data.train_transforms.0.probability=1.0")
    filled = build_dataset(cfg.data, "train", "train").transforms.transforms
    assert isinstance(filled[0], PasteTailInstances) and filled[0].root == str(rooms) and filled[0].split == "train"
    want = build_transforms(default_train_transforms(0.05, ["color"])).transforms
    assert [vars(t) for t in filled[1:]] == [vars(t) for t in want]
    assert torch.isfinite(_one_train_step(cfg)["loss_cross_entropy"])


# ---------------------------------------------------------------- balanced point sampling
# 7 points of class 0, 3 of class 1, 1 of class 2 and 4 ignored, interleaved; N = 2.
TARGET = torch.tensor([0, 1, -1, 0, 0, 2, 0, -1, 1, 0, -1, 0, 1, -1, 0])
N = 2


def _ce_by_hand(logits: torch.Tensor, target: torch.Tensor, rows: list[int], weight: list[float] | None = None) -> float:
    num = den = 0.0
    for i in rows:
        f, y = logits[i].tolist(), int(target[i])
        w = 1.0 if weight is None else weight[y]
        num += w * -(f[y] - math.log(sum(math.exp(v) for v in f)))
        den += w
    return num / den


@pytest.mark.parametrize("seed", range(5))
def test_balanced_sampling_counts_and_loss_by_hand(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    logits = torch.randn(len(TARGET), 3, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = CrossEntropyLoss(balanced_sampling={"points_per_class": N}).train()
    torch.manual_seed(seed)
    out = loss(logits, TARGET)
    out.backward()
    chosen = torch.nonzero(logits.grad.abs().sum(1)).flatten().tolist()
    per_class = {c: sum(int(TARGET[i]) == c for i in chosen) for c in (0, 1, 2)}
    assert per_class == {0: 2, 1: 2, 2: 1}  # min(n_c, N): 7 → 2, 3 → 2, 1 → 1
    assert all(int(TARGET[i]) != -1 for i in chosen)
    assert out.item() == pytest.approx(_ce_by_hand(logits.detach(), TARGET, chosen), abs=1e-12)
    # With class weights the mean over the chosen points is weighted, as F.cross_entropy's.
    weighted = CrossEntropyLoss(class_weight=[0.5, 2.0, 3.0], balanced_sampling={"points_per_class": N}).train()
    torch.manual_seed(seed)
    logits.grad = None
    w_out = weighted(logits, TARGET)
    w_out.backward()
    assert torch.nonzero(logits.grad.abs().sum(1)).flatten().tolist() == chosen  # the same draw
    assert w_out.item() == pytest.approx(_ce_by_hand(logits.detach(), TARGET, chosen, [0.5, 2.0, 3.0]), abs=1e-12)


def test_balanced_subset_is_uniform_within_each_class():
    """Over many draws each of class 0's 7 points is chosen with probability 2/7 (binomial bounds)."""
    valid = TARGET[TARGET >= 0]
    gen = torch.Generator().manual_seed(0)
    draws = 3000
    hits = torch.zeros(len(valid))
    subsets = set()
    for _ in range(draws):
        keep = balanced_point_subset(valid, N, gen)
        hits[keep] += 1
        subsets.add(tuple(keep.tolist()))
    for c, n_c in ((0, 7), (1, 3), (2, 1)):
        p = min(n_c, N) / n_c
        sd = math.sqrt(draws * p * (1 - p))
        assert torch.all((hits[valid == c] - draws * p).abs() <= 5 * sd + 1e-9), c
    # every combination of 2 of the 7 and 2 of the 3 occurs: C(7,2) * C(3,2) = 63 subsets
    assert len(subsets) == len(list(itertools.combinations(range(7), 2))) * 3


def test_balanced_sampling_is_off_in_evaluation_and_a_large_cap_is_plain_ce():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(len(TARGET), 3, generator=gen, dtype=torch.float64)
    valid = [i for i in range(len(TARGET)) if TARGET[i] >= 0]
    full = _ce_by_hand(logits, TARGET, valid)
    loss = CrossEntropyLoss(balanced_sampling={"points_per_class": N})
    state = torch.get_rng_state()
    assert loss.eval()(logits, TARGET).item() == pytest.approx(full, abs=1e-12)
    assert torch.equal(torch.get_rng_state(), state)  # evaluation draws nothing
    assert CrossEntropyLoss(balanced_sampling={"points_per_class": 7}).train()(logits, TARGET).item() == pytest.approx(full, abs=1e-12)
    state = torch.get_rng_state()
    ignored_only = CrossEntropyLoss(balanced_sampling={"points_per_class": 1}).train()(logits[[2, 7]], TARGET[[2, 7]])
    assert ignored_only.item() == 0.0 and torch.equal(torch.get_rng_state(), state)


def test_balanced_draws_are_exact_across_a_restored_rng_state():
    """The trainer's checkpoint saves torch's global RNG; restoring it replays the same subsets."""
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(len(TARGET), 3, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = CrossEntropyLoss(balanced_sampling={"points_per_class": 1}).train()
    torch.manual_seed(9)
    loss(logits, TARGET)
    saved = capture_rng_state()

    def next_subsets():
        rows = []
        for _ in range(4):
            logits.grad = None
            loss(logits, TARGET).backward()
            rows.append(torch.nonzero(logits.grad.abs().sum(1)).flatten().tolist())
        return rows

    first = next_subsets()
    restore_rng_state(saved)
    assert next_subsets() == first
    assert len({tuple(r) for r in first}) > 1  # the subsets change from step to step


def test_balanced_sampling_config_errors_and_the_config_trains(rooms, tiny_backbone):
    for bad, match in (({"points_per_class": 0}, "integer >= 1"), ({"points": 3}, "must be {points_per_class: N}"),
                       (5, "must be {points_per_class: N}")):
        with pytest.raises(ValueError, match=match):
            build_criteria([{"name": "cross_entropy", "balanced_sampling": bad}])
    cfg = _arm_config("balanced_sampling", rooms)
    assert cfg.loss[0]["balanced_sampling"]["points_per_class"] == 256
    assert _one_train_step(cfg)["loss_cross_entropy"] > 0
