"""One line saying what went wrong: what every command prints and the trainer logs for a failure.

Shared by the commands (``pointseg.cli.common``) and the engine (a failed validation is reported
and logged as one line while training goes on), so it lives below both.
"""

from __future__ import annotations

import errno
import re

# torch re-raises an exception of a DataLoader worker as "Caught X in DataLoader worker process N.
# Original Traceback (most recent call last): ..." whose last line is the original "X: message".
_WORKER_PREFIX = "Caught "
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"^[\w.]+: ")


def _worker_message(text: str) -> str | None:
    """The original message of an exception re-raised from a DataLoader worker, else None."""
    if not text.startswith(_WORKER_PREFIX) or _WORKER_TRACEBACK not in text:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    return _EXCEPTION_LINE.sub("", lines[-1].strip(), count=1) if lines else None


def one_line(e: BaseException) -> str:
    """What went wrong in one line, naming the file where the exception knows it.

    A full disk says "no space left on device" with the path; an exception raised in a DataLoader
    worker is reduced to its original message (not the worker's traceback).
    """
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}no space left on device"
    if isinstance(e, OSError) and e.filename and e.strerror:  # "[Errno 13] ...: 'path'" reworded
        return f"{e.filename}: {e.strerror}"
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    text = _worker_message(str(text)) or str(text)
    return " ".join(text.split()) or type(e).__name__
