"""What each CeCo center branch can do, measured without training a network (docs/ceco.md).

    python tools/ceco_diagnostics.py [--num-classes 200] [--feature-dim 96] [--steps 1500]

1. The lowest L_CR of each head variant: free class centers optimized through the head's frozen
   maps (``pointseg.analysis.ceco_floor``), next to chance (ln K) and the closed form for unit
   vectors on the ETF.
2. Minority collapse in the unconstrained-features model, with and without CeCo's loss
   (``pointseg.analysis.ufm``), with a biased classifier and without.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from pointseg.analysis.ceco_floor import etf_floor, lowest_center_loss
from pointseg.analysis.ufm import etf_cosine, unconstrained_features_run
from pointseg.cli.common import add_common, run_command
from pointseg.losses.ceco import CenterCollapseLoss

# name → (ceco keys, centers constrained to >= 0: pooled post-ReLU backbone features)
VARIANTS: dict[str, tuple[dict, bool]] = {
    "released (default)": ({}, False),
    "released, learned projection": ({"projection": "learned"}, False),
    "released, no projection (reduce to 256)": ({"reduce_dim": 256, "projection": "none"}, False),
    "paper_eq4": ({"head": "paper_eq4"}, True),
    "paper_eq4, learned projection": ({"head": "paper_eq4", "projection": "learned"}, True),
}


def floors(num_classes: int, feature_dim: int, steps: int) -> str:
    rows = [
        f"| center branch (K = {num_classes}, backbone features {feature_dim}-d) | pooled space | lowest L_CR |",
        "| --- | --- | ---: |",
        f"| chance (ln K) | | {math.log(num_classes):.2f} |",
        f"| unit vectors on the ETF × 5 (closed form) | | {etf_floor(num_classes, 5.0):.2f} |",
    ]
    for name, (keys, nonneg) in VARIANTS.items():
        branch = CenterCollapseLoss.from_config({**keys, "prior": "none"}, feature_dim, num_classes)
        space = f"{branch.pooled_dim}-d" + (", ≥ 0" if nonneg else f", signed, image of {feature_dim}-d")
        value = lowest_center_loss(branch, nonnegative=nonneg, steps=steps)
        rows.append(f"| {name} | {space} | {value:.2f} |")
        print(f"  {name}: {value:.3f}", file=sys.stderr, flush=True)
    return "\n".join(rows)


def mechanism() -> str:
    rows = [
        "| classifier | loss | minority classifier cos | majority classifier cos | Std-cos of class means | L_CR |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for bias, wd in ((True, 0.03), (False, 0.01)):
        for lam in (0.0, 1.0):
            r = unconstrained_features_run(center_weight=lam, bias=bias, weight_decay=wd)
            rows.append(
                f"| {'with' if bias else 'without'} bias, wd {wd} | {'CE + CeCo (λ = 1)' if lam else 'CE'} | "
                f"{r.minority_classifier_cos:+.3f} | {r.majority_classifier_cos:+.3f} | {r.std_cos_means:.3f} | "
                f"{r.center_loss:.2f} |"
            )
    rows.append(f"\nA simplex ETF of 10 classes has cosine {etf_cosine(10):+.3f}.")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-classes", type=int, default=200)
    ap.add_argument("--feature-dim", type=int, default=96)
    ap.add_argument("--steps", type=int, default=1500)
    add_common(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("### Lowest L_CR of each center branch\n")
    print(floors(args.num_classes, args.feature_dim, args.steps))
    print("\n### Minority collapse in the unconstrained-features model (K = 10, imbalance 1000)\n")
    print(mechanism())
    return 0


if __name__ == "__main__":
    sys.exit(main())
