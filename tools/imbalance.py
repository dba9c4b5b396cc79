"""Class imbalance at point and center level: ``pointseg.cli.imbalance`` (also the ``pointseg-imbalance`` command)."""

from pointseg.cli.imbalance import main

if __name__ == "__main__":
    raise SystemExit(main())
