"""``pointseg-train`` with the tiny test backbone registered: the real command (its signal
handling, run-folder lock, exit status and messages) in its own process, at test speed.

    python tests/tiny_train_cli.py --config tiny.yaml --out RUN ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_helpers import register_tiny_backbone  # noqa: E402

from pointseg.cli.train import main  # noqa: E402

if __name__ == "__main__":
    register_tiny_backbone()
    sys.exit(main())
