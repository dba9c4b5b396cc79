"""What the installed MinkowskiEngine was built for: ``make minkowski-cuda-check`` runs it.

Prints the version, ``MinkowskiEngine.is_cuda_available()`` (CUDA compiled in, whether or not a
GPU is visible), the CUDA version it was compiled with and the GPU architectures in its extension
(read from the extension's fat binaries, so no CUDA tool is needed). ``--require-cuda``: exit 1
unless it is a CUDA build.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
FATBIN_PTX = 1


def fatbin_archs(path: str | Path) -> list[str]:
    """``sm_XX`` (machine code) and ``ptx_XX`` entries of every fat binary in a shared library.

    Written by hand because the one tool that lists them (cuobjdump) ships only with a full CUDA
    toolkit. A fat binary is a 16-byte header (magic, version, header size, payload size) followed
    by entries, each a header (kind, version, header size, payload size, ..., the architecture at
    byte 28) and its payload.
    """
    data = Path(path).read_bytes()
    found: set[str] = set()
    pos = data.find(struct.pack("<I", FATBIN_MAGIC))
    while pos >= 0:
        _, _, header, size = struct.unpack_from("<IHHQ", data, pos)
        entry, end = pos + header, min(pos + header + size, len(data))
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            if entry_header == 0:
                break
            found.add(f"{'ptx' if kind == FATBIN_PTX else 'sm'}_{arch}")
            entry += entry_header + payload
        pos = data.find(struct.pack("<I", FATBIN_MAGIC), max(end, pos + 4))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--require-cuda", action="store_true", help="exit 1 unless CUDA is compiled in")
    args = p.parse_args(argv)
    import MinkowskiEngine as ME
    import MinkowskiEngineBackend._C as backend

    cuda = bool(ME.is_cuda_available())
    archs = fatbin_archs(backend.__file__)
    print(f"MinkowskiEngine {ME.__version__} ({backend.__file__})")
    print(f"is_cuda_available(): {cuda}")
    print(f"cuda_version(): {ME.cuda_version()}")
    print(f"compiled GPU architectures: {', '.join(archs) if archs else 'none'}")
    if args.require_cuda and not (cuda and archs):
        print("minkowski_info: this is not a CUDA build", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
