"""What every command shares: ``key=value`` overrides next to other arguments, console logging,
and one-line errors.

A user error (bad config, missing or broken file, full disk) ends the command with one line,
``error: <file>: <problem>``, and a non-zero exit status; ``--debug`` shows the traceback. Ctrl-C
ends it with one line and status 130 (commands that save on Ctrl-C, like training, handle the
first one themselves).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pointseg.utils.errors import one_line

# Exceptions that describe a problem with the user's input or machine, not a bug.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError, OSError)


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``key=value`` words apart from the other arguments.

    They are taken out before argparse sees the line: an option with ``nargs="+"`` (e.g. several
    ``--checkpoint`` files) would otherwise swallow them.
    """
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    return [a for a in argv if a not in overrides], overrides


def add_common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def setup_logging(level: int = logging.INFO) -> None:
    """Library messages (``logging``) on the console, as plain lines."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


# Exit status of a command ended by SIGINT (128 + 2), as a shell reports it.
EXIT_INTERRUPTED = 130

error_line = one_line


def run_command(main: Callable[[list[str]], int], argv: Sequence[str] | None, debug: bool | None = None) -> int:
    """``main(argv)`` with user errors turned into one ``error:`` line and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = ("--debug" in argv) if debug is None else debug
    setup_logging()
    try:
        return main(argv)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
