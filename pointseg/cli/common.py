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
import re
import sys
from collections.abc import Callable, Sequence

from pointseg.utils.errors import one_line

# Exceptions that describe a problem with the user's input or machine, not a bug (OSError covers
# a missing file, a refused permission, an existing output and a full disk).
USER_ERRORS = (ValueError, KeyError, OSError)

# A config override: a dotted key (``loss.0.weight``), then ``=``.
OVERRIDE_WORD = re.compile(r"^[A-Za-z_][\w.]*=")


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    """The option ``word`` names (exactly, or by an unambiguous prefix as argparse allows)."""
    actions = {s: a for a in parser._actions for s in a.option_strings}
    if word in actions:
        return actions[word]
    if not word.startswith("--") or not parser.allow_abbrev:
        return None
    matches = {a for s, a in actions.items() if s.startswith("--") and s.startswith(word)}
    return matches.pop() if len(matches) == 1 else None


def _values_needed(action: argparse.Action | None) -> int:
    """How many following words are surely the option's values (not overrides)."""
    if action is None:
        return 0
    nargs = action.nargs
    if nargs is None or nargs in ("?", "+"):
        return 1
    if isinstance(nargs, int):
        return nargs
    return 0  # "*", flags (0), REMAINDER


def split_overrides(argv: Sequence[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """``key=value`` words apart from the other arguments of ``parser``'s command line.

    They are taken out before argparse sees the line, so they may stand anywhere: an option with
    ``nargs="+"`` (e.g. several ``--checkpoint`` files) would otherwise swallow them, and words
    after an option would be unrecognized. A word is an override when it looks like ``key=``
    and is not the value an option needs (``--out runs/lr=0.1``, ``--out lr=0.1``); words after
    ``--`` are left to argparse.
    """
    rest: list[str] = []
    overrides: list[str] = []
    owed = 0  # values the last option still needs
    for i, word in enumerate(argv):
        if word == "--":
            rest += argv[i:]
            break
        if owed:
            owed -= 1
            rest.append(word)
        elif word.startswith("-") and len(word) > 1:
            rest.append(word)
            owed = 0 if "=" in word else _values_needed(_option(parser, word))
        elif OVERRIDE_WORD.match(word):
            overrides.append(word)
        else:
            rest.append(word)
    return rest, overrides


def parse_with_overrides(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` (of ``sys.argv[1:]`` when ``argv`` is None) with the ``key=value``
    overrides anywhere on the line, in ``args.overrides`` (the parser declares the positional
    ``overrides``, for its help)."""
    rest, overrides = split_overrides(sys.argv[1:] if argv is None else argv, parser)
    args = parser.parse_args(rest)
    args.overrides = overrides + list(getattr(args, "overrides", None) or [])
    return args


def add_common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def setup_logging(level: int = logging.INFO) -> None:
    """Library messages (``logging``) on the console, as plain lines."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


# Exit status of a command ended by SIGINT (128 + 2), as a shell reports it.
EXIT_INTERRUPTED = 130


def run_command(main: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """``main(argv)`` with user errors turned into one ``error:`` line and exit status 2
    (``--debug`` on the line: the traceback instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    setup_logging()
    try:
        return main(argv)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
