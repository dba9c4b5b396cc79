"""Segment scans outside any dataset layout with a checkpoint: ``pointseg.cli.predict`` (also the ``pointseg-predict`` command)."""

from pointseg.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
