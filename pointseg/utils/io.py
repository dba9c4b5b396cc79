"""Atomic writes: an output file or folder appears complete or not at all."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

# fsync errors that mean "this filesystem does not sync files", not a failed write.
_SYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP)


def _fsync(path: Path) -> None:
    """Flush ``path``'s data (a file) or entries (a folder) to the disk.

    Without it a rename can reach the disk before the data it names, and a power cut leaves an
    empty or partial file under the final name. Folders are best effort: some platforms and
    filesystems cannot open or sync one.
    """
    if path.is_dir():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _SYNC_UNSUPPORTED:
            raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """:func:`_fsync` of a file, or of a folder with everything in it."""
    if path.is_dir() and not path.is_symlink():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync(Path(root) / name)
            _fsync(Path(root))
    elif path.exists() and not path.is_symlink():
        _fsync(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the body succeeds.

    Works for files and folders (a folder replaces an existing one). The temporary lives in the
    same directory so the final ``os.replace`` is a rename on one filesystem; it is synced to
    the disk before the rename, and the directory after it, so that a power cut leaves either
    the previous content or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_tree(tmp)
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}{_OLD}{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _fsync(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync(path.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


# Names atomic_path gives its temporaries (".<name>.<random>.tmp") and a folder being replaced
# (".<name>.old.<pid>"): what a process killed mid-write leaves behind.
_OLD = ".old."
TEMPORARY_GLOBS = (".*.tmp", f".*{_OLD}*")
_REPLACED = re.compile(rf"^\.(?P<name>.+){re.escape(_OLD)}\d+$")


def remove_temporaries(folder: str | os.PathLike, names: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temporaries :func:`atomic_path` left in ``folder`` (not below it) when its
    writer was killed; returns them. Only call it while no other process writes there.

    ``names`` limits it to the temporaries of those outputs (a folder other programs write to
    too). A folder replace killed between its two renames leaves ``.<name>.old.<pid>`` as the
    only copy: it is renamed back to ``<name>``, not deleted.
    """
    folder = Path(folder)
    removed = []
    for pattern in TEMPORARY_GLOBS:
        for path in sorted(folder.glob(pattern)):
            if not (path.exists() or path.is_symlink()):
                continue  # matched both patterns and is gone already
            replaced = _REPLACED.match(path.name)
            owner = replaced["name"] if replaced else _temporary_owner(path.name)
            if names is not None and owner not in names:
                continue
            if replaced and not (folder / owner).exists():
                os.replace(path, folder / owner)
                log.info("%s: restored from %s (its replacement was interrupted)", folder / owner, path.name)
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def _temporary_owner(name: str) -> str | None:
    """The output a ``.<name>.<random>.tmp`` temporary was written for."""
    stem = name[1:].removesuffix(".tmp")
    return stem.rsplit(".", 1)[0] if "." in stem else None


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Raise an ``OSError`` naming ``folder`` unless files can be written into it: before hours of
    work whose outputs go there, not when the first one is written (and the error names the
    temporary file). A folder that does not exist yet is checked at its nearest existing parent,
    and not created.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        problem = "exists as a file, not a folder" if existing == folder else f"cannot be created: {existing} is a file"
        raise NotADirectoryError(errno.ENOTDIR, problem, str(folder))
    try:  # a real write: permissions, a read-only mount and root's rights are all as for the outputs
        fd, probe = tempfile.mkstemp(prefix=".write_check.", suffix=".tmp", dir=existing)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(folder)) from e
    os.close(fd)
    os.unlink(probe)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` through a temp file + rename (no pickled objects)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """``np.load`` that never unpickles and names the file when it cannot be read."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read array ({e})") from e
