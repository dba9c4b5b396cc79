"""tools/gpu_check.py and tools/minkowski_info.py where no GPU is: the check says so and succeeds;
the training step it times builds and learns on the CPU; the fat-binary reader
finds the architectures of a hand-made fat binary."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointseg.sparse import SparseTensor

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_0(monkeypatch, capsys):
    gpu_check = _load("gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu-check: no GPU visible") and torch.__version__ in out


def test_make_gpu_check_exits_0_here():
    """The command itself, as `make gpu-check` runs it, in a fresh process (no GPU in CI)."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check would run for minutes")
    out = subprocess.run([sys.executable, str(TOOLS / "gpu_check.py")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "no GPU visible" in out.stdout


def test_the_timed_training_step_learns_on_the_cpu():
    """The model the check times (backbone, classifier, CeCo branch) trains: a few SGD steps on
    one small scene lower its loss."""
    gpu_check = _load("gpu_check")
    g = torch.Generator().manual_seed(0)
    # a 64³ grid: the stride-16 layers still hold many voxels (BatchNorm needs more than one)
    cells = torch.randperm(64**3, generator=g)[:1500]
    coords = torch.stack([torch.zeros_like(cells), cells // 4096, cells // 64 % 64, cells % 64], 1).int()
    segment = (coords[:, 1] // 16 + 4 * (coords[:, 3] // 32)).long()  # 8 spatial classes
    x = SparseTensor(torch.rand(1500, 3, generator=g), coords)
    torch.manual_seed(0)
    net = gpu_check._Net("torch", ceco=True)
    assert net.center_loss is not None and net.center_loss.etf.shape == (512, gpu_check.NUM_CLASSES)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = net(SparseTensor(x.feats, x.coords), segment)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def _fatbin(entries: list[tuple[int, int, bytes]]) -> bytes:
    """A fat binary as nvcc writes it: header, then per entry a 64-byte header and its payload."""
    body = b""
    for kind, arch, payload in entries:
        head = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + bytes(12) + struct.pack("<I", arch)
        body += head + bytes(64 - len(head)) + payload
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_fatbin_reader_lists_machine_code_and_ptx(tmp_path):
    minkowski_info = _load("minkowski_info")
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"\x7fELF" + bytes(100) + _fatbin([(2, 80, b"x" * 40), (2, 90, b"y" * 24)]) + bytes(7)
                    + _fatbin([(1, 90, b"ptx text")]))
    assert minkowski_info.fatbin_archs(lib) == ["ptx_90", "sm_80", "sm_90"]
    (tmp_path / "cpu.so").write_bytes(b"\x7fELF" + bytes(64))
    assert minkowski_info.fatbin_archs(tmp_path / "cpu.so") == []


@pytest.mark.skipif(importlib.util.find_spec("MinkowskiEngine") is None, reason="MinkowskiEngine not installed")
def test_minkowski_info_reports_the_installed_build(capsys):
    import MinkowskiEngine as ME

    minkowski_info = _load("minkowski_info")
    status = minkowski_info.main(["--require-cuda"])
    out = capsys.readouterr().out
    assert f"is_cuda_available(): {bool(ME.is_cuda_available())}" in out
    assert status == (0 if ME.is_cuda_available() else 1)


def _wheel(path: Path, files: dict[str, str]) -> Path:
    """A wheel is a zip of site-packages entries: enough of one for ``use_wheel``."""
    import zipfile

    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def test_a_carried_wheel_is_imported_without_pip(tmp_path, monkeypatch):
    """``--minkowski-wheel``: the wheel unpacks onto the import path (and the tests' subprocess
    path); a build that does not import is reported with its error, not raised."""
    gpu_check = _load("gpu_check")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    good = _wheel(tmp_path / "good-0.1-py3-none-any.whl", {
        "carried_good/__init__.py": "def is_cuda_available():\n    return True\n",
        "carried_good-0.1.dist-info/METADATA": "Name: carried_good\n"})
    report = gpu_check.use_wheel(good, tmp_path / "good", module="carried_good")
    assert report == {"wheel": good.name, "imports": True, "cuda_available": True}
    assert sys.modules["carried_good"].__file__.startswith(str(tmp_path / "good"))
    assert str(tmp_path / "good") in os.environ["PYTHONPATH"].split(os.pathsep)

    bad = _wheel(tmp_path / "bad-0.1-py3-none-any.whl", {
        "carried_bad/__init__.py": "raise ImportError('undefined symbol: _ZN3c10 (built against another torch)')\n"})
    report = gpu_check.use_wheel(bad, tmp_path / "bad", module="carried_bad")
    assert report["imports"] is False and "undefined symbol" in report["error"]
    for name in ("carried_good", "carried_bad"):
        sys.modules.pop(name, None)


def test_a_missing_wheel_is_a_usage_error(tmp_path, capsys):
    gpu_check = _load("gpu_check")
    with pytest.raises(SystemExit):
        gpu_check.main(["--minkowski-wheel", str(tmp_path / "none.whl")])
    assert "none.whl: no such file" in capsys.readouterr().err
