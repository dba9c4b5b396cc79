"""Train a segmentor: ``pointseg.cli.train`` (also the ``pointseg-train`` command)."""

from pointseg.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
