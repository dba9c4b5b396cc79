"""Procedural indoor scenes in the raw ScanNet layout, with ScanNet200's long tail."""

from pointseg.synthetic.generate import generate_synthetic_scannet, plan_dataset

__all__ = ["generate_synthetic_scannet", "plan_dataset"]
