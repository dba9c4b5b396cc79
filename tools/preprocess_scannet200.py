"""Convert a raw ScanNet v2 release into ScanNet200 scene folders: ``pointseg.cli.preprocess`` (also the ``pointseg-preprocess`` command)."""

from pointseg.cli.preprocess import main

if __name__ == "__main__":
    raise SystemExit(main())
