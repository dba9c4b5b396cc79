"""The worked example of docs/design.md ("Adding a loss") runs as written: its loss class, its
registry line and its config, checked against a hand-computed value and closed-form gradient."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pointseg.engine.config import load_config
from pointseg.losses import LOSSES, build_criteria

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def section_blocks(title: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the section ``## <title>`` of docs/design.md."""
    text = DESIGN.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def hinge_oracle(logits: list[list[float]], target: list[int], margin: float, ignore: int):
    """Σ_{j≠y} max(0, m + l_j − l_y)² averaged over the labelled points, and its gradient
    (d/dl_j = 2·h_j / n for j ≠ y, d/dl_y = −Σ_j 2·h_j / n), in plain Python."""
    rows = [i for i, y in enumerate(target) if y != ignore]
    n = len(rows)
    value, grad = 0.0, [[0.0] * len(logits[0]) for _ in logits]
    for i in rows:
        y = target[i]
        for j, lj in enumerate(logits[i]):
            if j == y:
                continue
            h = max(0.0, margin + lj - logits[i][y])
            value += h * h / n
            grad[i][j] += 2 * h / n
            grad[i][y] -= 2 * h / n
    return value, grad


def test_adding_a_loss_runs_as_written(tmp_path, monkeypatch):
    blocks = section_blocks("Adding a loss")
    assert [lang for lang, _ in blocks] == ["python", "python", "yaml"]
    (_, module_code), (_, registry_line), (_, config_text) = blocks

    namespace: dict = {}
    exec(compile(module_code, "docs/design.md (Adding a loss)", "exec"), namespace)
    # the registry line is shown with "..." for the existing entries: read its new entry
    name, cls_name = re.search(r'"(\w+)":\s*(\w+)\}', registry_line).groups()
    monkeypatch.setitem(LOSSES, name, namespace[cls_name])

    # the config extends baseline.yaml beside it: give it one
    (tmp_path / "baseline.yaml").symlink_to(ROOT / "configs" / "scannet200" / "baseline.yaml")
    path = tmp_path / "baseline_hinge.yaml"
    path.write_text(config_text)
    cfg = load_config(path)
    criteria = build_criteria(cfg.loss)
    assert criteria.weights == {"loss_cross_entropy": 1.0, f"loss_{name}": 0.5}

    logits_list = [[0.3, -1.2, 0.9, 0.0], [2.0, 0.1, -0.4, 1.5], [0.0, 0.0, 0.0, 0.0], [-0.7, 0.8, 0.2, 0.5]]
    ignore, margin = namespace["IGNORE_INDEX"], 1.0
    target_list = [2, 0, ignore, 1]
    logits = torch.tensor(logits_list, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(target_list)
    terms = criteria(logits, target)
    assert list(terms) == ["loss_cross_entropy", f"loss_{name}"]
    value, grad = hinge_oracle(logits_list, target_list, margin, ignore)
    assert terms[f"loss_{name}"].item() == pytest.approx(value, rel=1e-12)
    terms[f"loss_{name}"].backward()
    assert torch.allclose(logits.grad, torch.tensor(grad, dtype=torch.float64), rtol=0, atol=1e-12)

    # no labelled point: a zero that keeps the graph, as the example says
    empty = criteria.terms[name](logits, torch.full((4,), ignore))
    assert empty.item() == 0.0 and empty.requires_grad
