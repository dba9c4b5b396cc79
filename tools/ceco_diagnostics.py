"""What each CeCo center branch can do: ``pointseg.cli.ceco_diagnostics`` (also the ``pointseg-ceco-diagnostics`` command)."""

from pointseg.cli.ceco_diagnostics import main

if __name__ == "__main__":
    raise SystemExit(main())
