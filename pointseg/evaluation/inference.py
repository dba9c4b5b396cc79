"""Per-vertex prediction: test-mode fragments, test-time augmentation and checkpoint ensembles.

Every vertex gets class probabilities from its own voxel representative: the scene is voxelized in
test mode and split into fragments (``pointseg.data.voxelize.fragments``), fragment j holding the
(j mod count)-th point of every voxel, so every vertex is the representative of its voxel in at
least one fragment. A view (one rotation / scale of the scene) averages the softmax of its
fragments per vertex; views and models (an ensemble) then vote with equal weight by averaging
those probabilities. Scene folders keep mesh vertex order, so the result is in mesh vertex order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pointseg.data.collate import Batch, make_batch, to_device

# One fragment: voxel coordinates, features and the point each voxel row stands for:
# grid_coord int32 (M,3), feat float32 (M,C), and either index int64 (M,) (each voxel row
# predicts that point) or inverse int64 (N,) (every point takes its voxel row's prediction).
Fragment = dict[str, np.ndarray]
Model = Callable[[dict], dict]


@dataclass(frozen=True)
class TTAView:
    """One test-time view of a scene: rotation ``angle`` (radians) about z, then ``scale``."""

    angle: float = 0.0
    scale: float = 1.0


def tta_views(num_rotations: int = 1, scales: Sequence[float] = (1.0,)) -> list[TTAView]:
    """``num_rotations`` evenly spaced rotations about z (0, 2π/n, …) for each scale."""
    if num_rotations < 1:
        raise ValueError(f"TTA needs at least one rotation, got {num_rotations}")
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"TTA scales must be positive, got {list(scales)}")
    return [TTAView(2 * math.pi * i / num_rotations, float(s)) for s in scales for i in range(num_rotations)]


def apply_view(data: dict, view: TTAView) -> dict:
    """Copy of a scene dict rotated about the vertical axis through its xy centre, then scaled.

    Rotation about the centre keeps the scene where it was, so a view differs from the original
    only in orientation and size; normals rotate with the points (and are not scaled). A rotated
    or scaled view is off the grid of a ``grid_origin`` (``pointseg.evaluation.chunks``): dropped.
    """
    # Copies: a pipeline may write its arrays in place, and the scene serves every view.
    out = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in data.items()}
    if view.angle == 0.0 and view.scale == 1.0:
        return out
    out.pop("grid_origin", None)
    c, s = math.cos(view.angle), math.sin(view.angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    coord = np.asarray(data["coord"], dtype=np.float64)
    centre = np.zeros(3)
    centre[:2] = (coord[:, :2].min(0) + coord[:, :2].max(0)) / 2
    out["coord"] = (((coord - centre) @ rot.T) * view.scale + centre).astype(np.float32)
    if "normal" in data:
        out["normal"] = (np.asarray(data["normal"], dtype=np.float64) @ rot.T).astype(np.float32)
    return out


def fragment_batch(fragment: Fragment, device: torch.device | str = "cpu") -> Batch:
    """The batch of one fragment, laid out by training's ``make_batch`` (docs/design.md), without
    ``collate``'s voxel budget: at test time no scene may be dropped."""
    return to_device(make_batch([fragment]), device)


@torch.no_grad()
def vote(
    models: Sequence[Model],
    views: Iterable[Sequence[Fragment]],
    num_points: int,
    num_classes: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Mean class probabilities (N, K) float32 over models × views.

    Within one view a point may be the representative in several fragments (voxels with few
    points repeat theirs); it counts once per view, so every view and every model weighs the
    same. Probabilities, not logits, are averaged: models with different logit scales vote fairly.
    """
    if not models:
        raise ValueError("vote: no model given")
    total = torch.zeros((num_points, num_classes), dtype=torch.float32, device=device)
    view_sum = torch.empty_like(total)
    count = torch.empty(num_points, dtype=torch.float32, device=device)
    n_votes = 0
    for frags in views:
        batches = [
            (
                fragment_batch(f, device),
                torch.as_tensor(f["index"], device=device) if "index" in f else None,
                torch.as_tensor(f["inverse"], device=device) if "inverse" in f else None,
            )
            for f in frags
        ]
        for model in models:
            view_sum.zero_()
            count.zero_()
            for batch, index, inverse in batches:
                logits = model(batch)["logits"]
                rows = batch["feat"].shape[0]
                if logits.shape != (rows, num_classes):
                    raise ValueError(
                        f"vote: model returned logits {tuple(logits.shape)} for "
                        f"{rows} voxels and {num_classes} classes"
                    )
                prob = torch.softmax(logits.float(), dim=1)
                if index is not None:  # each voxel row predicts its representative point
                    view_sum.index_add_(0, index, prob)
                    count.index_add_(0, index, torch.ones_like(index, dtype=torch.float32))
                elif inverse is not None:  # no fragments: every point takes its voxel's prediction
                    view_sum += prob[inverse]
                    count += 1
                else:
                    raise ValueError("vote: a fragment needs 'index' or 'inverse'")
            if bool((count == 0).any()):
                missing = int((count == 0).sum())
                raise ValueError(f"vote: {missing} points were not predicted by any fragment of a view")
            total += view_sum / count[:, None]
            n_votes += 1
    if n_votes == 0:
        raise ValueError("vote: no view given")
    return total / n_votes



def sample_fragments(sample: dict) -> list[Fragment]:
    """Fragments of a sample voxelized by ``Voxelize(mode="test")``.

    When the test pipeline emits fragments (``build_dataset(..., fragments=True)``), fragment j
    pairs the voxel rows with their j-th representative's features (``origin_feat[fragments[j]]``);
    otherwise the single fragment is the voxelized sample and every point takes its voxel's
    prediction through ``inverse``.
    """
    if "inverse" not in sample or "grid_coord" not in sample:
        raise ValueError(f"scene {sample.get('name', '?')!r}: sample is not voxelized in test mode")
    if "fragments" not in sample:
        return [{"grid_coord": sample["grid_coord"], "feat": sample["feat"], "inverse": sample["inverse"]}]
    if "origin_feat" not in sample:
        raise ValueError(f"scene {sample.get('name', '?')!r}: fragments without origin_feat")
    feat = sample["origin_feat"]
    return [{"grid_coord": sample["grid_coord"], "feat": feat[idx], "index": idx} for idx in sample["fragments"]]


def predict_scene(
    models: Sequence[Model],
    data: dict,
    transforms: Callable[[dict, np.random.Generator], dict],
    views: Sequence[TTAView] = (TTAView(),),
    num_classes: int = 200,
    device: torch.device | str = "cpu",
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Mean class probabilities (N, K) of every point of a loaded scene, in the scene's point order.

    ``transforms`` is the test pipeline (with or without fragments, as the dataset was built);
    each TTA view is voxelized afresh, one at a time, so memory holds one view.
    """
    n = int(np.asarray(data["coord"]).shape[0])
    rng = rng if rng is not None else np.random.default_rng(0)

    def frags_of(view: TTAView) -> list[Fragment]:
        sample = transforms(apply_view(data, view), rng)
        if int(sample.get("num_points", n)) != n:
            raise ValueError(f"scene {data.get('name', '?')!r}: the test pipeline changed the point count")
        return sample_fragments(sample)

    return vote(models, (frags_of(v) for v in views), n, num_classes, device)
