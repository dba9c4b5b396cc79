"""One writer per output folder: an exclusive ``flock`` on ``FOLDER/.lock`` held while writing.

Two trainings into one run folder (or two preprocessing runs into one data folder) would
overwrite each other's files without a word; the second one is refused instead, naming the pid
of the first. The lock belongs to the open file, so the operating system drops it when the
holder exits or dies: a stale ``.lock`` file never blocks anyone, and nothing has to clean it up.
(``flock`` also works on NFS v4 and Lustre mounted with ``flock``; the file is never deleted,
since deleting a lock file while another process opens it would let two holders in.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".lock"


class FolderBusyError(OSError):
    """Another process holds the folder's lock; the message names its pid."""


class FolderLock:
    """Exclusive lock of ``folder`` (created if needed) for this process; ``release`` or exit frees it.

    ``what`` and ``noun`` only word the refusal: "<folder>: another <what> (pid N) is writing to
    this <noun>".
    """

    def __init__(self, folder: str | os.PathLike, what: str = "training", noun: str = "run folder") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what, self.noun = what, noun
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock without waiting; raises :class:`FolderBusyError` if another holds it."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusyError(
                f"{self.folder}: another {self.what} (pid {holder}) is writing to this {self.noun}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file drops it); the file stays, holding the last pid."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
