"""Neural-collapse diagnostics of trained checkpoints: ``pointseg.cli.collapse`` (also the ``pointseg-collapse`` command)."""

from pointseg.cli.collapse import main

if __name__ == "__main__":
    raise SystemExit(main())
