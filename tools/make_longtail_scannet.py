"""Write the long-tailed CPU benchmark: ``pointseg.cli.make_longtail`` (also the ``pointseg-make-longtail`` command)."""

from pointseg.cli.make_longtail import main

if __name__ == "__main__":
    raise SystemExit(main())
