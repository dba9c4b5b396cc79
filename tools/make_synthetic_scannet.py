"""Write a synthetic ScanNet v2 release: ``pointseg.cli.make_synthetic`` (also the ``pointseg-make-synthetic`` command)."""

from pointseg.cli.make_synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
