"""Raw ScanNet v2 scans → labelled ScanNet200 scene folders and ``stats.json``.

``raw``: read/write the raw scan files with validation; ``labels``: the official ScanNet200 label
rule; ``normals``: area-weighted vertex normals; ``preprocess``: scene → scene folder, the
parallel driver and the statistics.
"""

from pointseg.preprocessing.labels import scannet200_labels
from pointseg.preprocessing.normals import vertex_normals
from pointseg.preprocessing.preprocess import PreprocessSummary, preprocess_scannet200
from pointseg.preprocessing.raw import RawScene, RawSceneError, read_raw_scene, write_raw_scene

__all__ = [
    "PreprocessSummary",
    "RawScene",
    "RawSceneError",
    "preprocess_scannet200",
    "read_raw_scene",
    "scannet200_labels",
    "vertex_normals",
    "write_raw_scene",
]
