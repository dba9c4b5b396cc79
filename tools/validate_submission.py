"""Check a ScanNet200 submission zip: ``pointseg.cli.validate_submission`` (also the ``pointseg-validate-submission`` command)."""

from pointseg.cli.validate_submission import main

if __name__ == "__main__":
    raise SystemExit(main())
