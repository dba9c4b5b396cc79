"""Scan files: every reader against the array it was written from, colour encodings, the labelled
writers, the y-up / millimetre conversion, and one-line errors that name the file."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pointseg.data.scan_frame import to_scannet_frame, units_hint, up_to_z
from pointseg.data.scan_io import colors_to_255, output_path, read_scan, write_labelled_scan


def _points(n: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-2, 5, (n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8)


def write_ply(path, coord, color=None, color_dtype="u1", faces=None, text=False) -> None:
    fields = [("x", coord.dtype.str), ("y", coord.dtype.str), ("z", coord.dtype.str)]
    if color is not None:
        fields += [(c, color_dtype) for c in ("red", "green", "blue")]
    v = np.empty(len(coord), dtype=fields)
    for i, a in enumerate("xyz"):
        v[a] = coord[:, i]
    if color is not None:
        for i, c in enumerate(("red", "green", "blue")):
            v[c] = color[:, i]
    elements = [PlyElement.describe(v, "vertex")]
    if faces is not None:
        f = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        f["vertex_indices"] = faces
        elements.append(PlyElement.describe(f, "face"))
    PlyData(elements, text=text).write(str(path))


# ---- readers ----

def test_ply_point_cloud_and_mesh(tmp_path) -> None:
    coord, color = _points()
    write_ply(tmp_path / "cloud.ply", coord, color)
    scan = read_scan(tmp_path / "cloud.ply")
    np.testing.assert_array_equal(scan.coord, coord)
    np.testing.assert_array_equal(scan.color, color.astype(np.float32))
    assert scan.color_encoding == "8-bit" and scan.faces is None
    faces = np.array([[0, 1, 2], [2, 3, 4]])
    write_ply(tmp_path / "mesh.ply", coord.astype(np.float64), None, faces=faces, text=True)
    mesh = read_scan(tmp_path / "mesh.ply")
    assert mesh.coord.dtype == np.float64 and mesh.color is None
    np.testing.assert_array_equal(mesh.faces, faces)


def test_npy_and_text_columns(tmp_path) -> None:
    coord, color = _points()
    np.save(tmp_path / "a.npy", coord)
    np.save(tmp_path / "b.npy", np.c_[coord, color].astype(np.float64))
    a, b = read_scan(tmp_path / "a.npy"), read_scan(tmp_path / "b.npy")
    assert a.color is None
    np.testing.assert_array_equal(b.coord, coord.astype(np.float64))
    np.testing.assert_array_equal(b.color, color)
    rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {bl}" for (x, y, z), (r, g, bl) in zip(coord, color)]
    (tmp_path / "c.xyz").write_text("# exported\n" + "\n".join(rows) + "\n")
    (tmp_path / "d.txt").write_text("\n".join(r.replace(" ", ",") for r in rows) + "\n")
    for name in ("c.xyz", "d.txt"):
        scan = read_scan(tmp_path / name)
        np.testing.assert_allclose(scan.coord, coord, atol=1e-6)
        np.testing.assert_array_equal(scan.color, color)
        assert scan.color_encoding == "8-bit"


def test_colour_encodings_are_detected() -> None:
    rgb = np.array([[0, 128, 255], [10, 20, 30]])
    for raw, encoding in ((rgb.astype(np.uint8), "8-bit"), (rgb.astype(np.float32), "0-255 floats"),
                          ((rgb / 255).astype(np.float32), "0-1 floats"), (rgb.astype(np.uint16) * 257, "16-bit")):
        out, found = colors_to_255(raw, "scan.ply")
        assert found == encoding
        np.testing.assert_allclose(out, rgb, atol=1e-4)
    with pytest.raises(ValueError, match="scan.ply: colours must not be negative"):
        colors_to_255(np.array([[-1.0, 0, 0]]), "scan.ply")


def test_las_through_laspy(tmp_path) -> None:
    import laspy

    coord, color = _points()
    header = laspy.LasHeader(point_format=2, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.zeros(3)
    las = laspy.LasData(header)
    las.x, las.y, las.z = coord[:, 0].astype(np.float64), coord[:, 1].astype(np.float64), coord[:, 2].astype(np.float64)
    las.red, las.green, las.blue = (color[:, i].astype(np.uint16) * 257 for i in range(3))  # 16-bit, as scanners write
    las.write(str(tmp_path / "scan.las"))
    scan = read_scan(tmp_path / "scan.las")
    np.testing.assert_allclose(scan.coord, coord, atol=0.0006)  # the file's millimetre scale
    assert scan.color_encoding == "16-bit"
    np.testing.assert_allclose(scan.color, color, atol=1e-4)


def test_pcd_through_open3d_and_its_missing_extra(tmp_path, monkeypatch) -> None:
    (tmp_path / "scan.pcd").write_text("# .PCD v0.7\n")
    monkeypatch.setitem(sys.modules, "open3d", None)  # not installed
    with pytest.raises(ValueError, match=r"scan.pcd: reading PCD files needs open3d: pip install 'pointseg\[scans\]'"):
        read_scan(tmp_path / "scan.pcd")
    # open3d's API as pointseg calls it: points, and 0-1 float colours
    coord, color = _points()

    class Cloud:
        points, colors, normals = coord.astype(np.float64), color / 255.0, np.zeros((0, 3))

        def has_colors(self) -> bool:
            return True

        def has_normals(self) -> bool:
            return False

    calls = []
    fake = types.SimpleNamespace(io=types.SimpleNamespace(read_point_cloud=lambda p, format: calls.append(p) or Cloud()))
    monkeypatch.setitem(sys.modules, "open3d", fake)
    scan = read_scan(tmp_path / "scan.pcd")
    assert calls == [str(tmp_path / "scan.pcd")] and scan.color_encoding == "0-1 floats"
    np.testing.assert_array_equal(scan.color, color)
    Cloud.points = np.zeros((0, 3))
    with pytest.raises(ValueError, match="scan.pcd: no points"):
        read_scan(tmp_path / "scan.pcd")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.ply", b"", "empty file"),
        ("broken.ply", b"ply\nformat nonsense\nend_header\n", "cannot read PLY"),
        ("short.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\n"
                      b"property float y\nproperty float z\nend_header\n" + b"\0" * 40, "cannot read PLY"),
        ("nopoints.ply", b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                         b"property float z\nend_header\n", "no points"),
        ("scan.obj", b"v 0 0 0\n", "unsupported scan format '.obj'"),
        ("scan", b"0 0 0\n", "unsupported scan format '(no extension)'"),
        ("bad.npy", b"\x93NUMPY garbage", "cannot read NPY"),
        ("binary.txt", bytes(range(256)) * 4, "not a text file"),
        ("words.xyz", b"x y z\n1 2 3\n", "cannot read x y z"),
        ("cols.txt", b"1 2 3 4\n5 6 7 8\n", "3 columns (x y z) or 6"),
    ],
)
def test_bad_scan_files_fail_in_one_line_naming_the_file(tmp_path, name, content, problem) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_scan(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_missing_scan_and_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.ply: scan not found"):
        read_scan(tmp_path / "nothere.ply")
    (tmp_path / "dir.ply").mkdir()
    with pytest.raises(ValueError, match="dir.ply: not a file"):
        read_scan(tmp_path / "dir.ply")


# ---- writers ----

@pytest.mark.parametrize("fmt", ["ply", "npy", "txt"])
def test_labelled_outputs_keep_points_order_and_dtype(tmp_path, fmt) -> None:
    coord, color = _points(40)
    coord = coord.astype(np.float64) * 1000 + 123456.789  # large, float64: must come back exactly
    np.save(tmp_path / "in.npy", np.c_[coord, color])
    before = (tmp_path / "in.npy").read_bytes()
    scan = read_scan(tmp_path / "in.npy")
    label = np.arange(40, dtype=np.int32) * 7
    colors = np.random.default_rng(1).integers(0, 256, (40, 3)).astype(np.uint8)
    out = write_labelled_scan(output_path(tmp_path, scan.path, fmt), scan, label, colors, fmt)
    assert out == tmp_path / f"in.labels.{fmt}"
    assert (tmp_path / "in.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.npy", out.name])  # no temporary left
    if fmt == "ply":
        v = PlyData.read(str(out))["vertex"].data
        table = {k: v[k] for k in v.dtype.names}
    elif fmt == "npy":
        v = np.load(out, allow_pickle=False)
        table = {k: v[k] for k in v.dtype.names}
    else:
        v = np.loadtxt(out)
        assert out.read_text().startswith("# x y z red green blue label\n")
        table = dict(zip(("x", "y", "z", "red", "green", "blue", "label"), v.T))
    np.testing.assert_array_equal(np.c_[table["x"], table["y"], table["z"]], coord)
    np.testing.assert_array_equal(np.c_[table["red"], table["green"], table["blue"]], colors)
    np.testing.assert_array_equal(table["label"], label)


def test_mesh_keeps_its_faces(tmp_path) -> None:
    coord, _ = _points(6)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    write_ply(tmp_path / "m.ply", coord, faces=faces)
    scan = read_scan(tmp_path / "m.ply")
    out = write_labelled_scan(tmp_path / "out.ply", scan, np.ones(6, np.int32), np.zeros((6, 3), np.uint8), "ply")
    ply = PlyData.read(str(out))
    np.testing.assert_array_equal(np.stack(ply["face"]["vertex_indices"]), faces)


# ---- frame ----

def test_y_up_millimetres_to_z_up_metres_is_exact() -> None:
    rng = np.random.default_rng(2)
    metres = (rng.integers(-400, 400, (100, 3)) / 64).astype(np.float32)  # exact binary fractions
    # the same points as a y-up exporter in millimetres writes them: (x, z, -y)
    exported = np.c_[metres[:, 0], metres[:, 2], -metres[:, 1]].astype(np.float32) * np.float32(1000)
    np.testing.assert_array_equal(to_scannet_frame(exported, up="y", units="mm"), metres)
    np.testing.assert_array_equal(to_scannet_frame(metres), metres)
    turned = up_to_z(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), "y")  # y-up "up" is z after, x stays
    np.testing.assert_array_equal(turned, [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert np.linalg.det(np.c_[up_to_z(np.eye(3), "y")]) == pytest.approx(1.0)  # a rotation, not a mirror


def test_units_hint() -> None:
    room_mm = np.array([[0.0, 0, 0], [6000, 4000, 2500]])
    assert units_hint(room_mm / 1000, "m") is None
    hint = units_hint(room_mm, "m")  # millimetres read as metres: 6 km across
    assert "in --units mm it would be 6 m" in hint
    assert "in --units m it would be 6 m" in units_hint(room_mm / 1000 / 1000, "mm")  # metres read as mm
