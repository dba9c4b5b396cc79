"""Procedural indoor scenes in the raw ScanNet layout, with ScanNet200's long tail."""

from pointseg.synthetic.generate import generate_synthetic_scannet, plan_dataset
from pointseg.synthetic.longtail import generate_longtail

__all__ = ["generate_longtail", "generate_synthetic_scannet", "plan_dataset"]
