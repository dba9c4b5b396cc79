"""pointseg: ScanNet200 semantic segmentation with the Center Collapse Regularizer (CeCo)."""

__version__ = "0.2.0"
