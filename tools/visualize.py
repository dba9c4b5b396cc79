"""Pictures and PLY files of a scene: ``pointseg.cli.visualize`` (also the ``pointseg-visualize`` command)."""

from pointseg.cli.visualize import main

if __name__ == "__main__":
    raise SystemExit(main())
