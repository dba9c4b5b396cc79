"""Evaluate checkpoints on a split, or write a test submission: ``pointseg.cli.evaluate`` (also the ``pointseg-test`` command)."""

from pointseg.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
