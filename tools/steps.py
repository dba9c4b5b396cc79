"""Running pointseg's own command-line tools as the steps of a larger job (demo, study).

Each step is the same tool a researcher runs by hand, echoed before it runs, so the job's output
doubles as a recipe.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str, *args: object) -> list:
    """Command line of ``tools/<name>.py`` with this interpreter."""
    return [sys.executable, ROOT / "tools" / f"{name}.py", *args]


def run(cmd: list, job: str) -> None:
    """Echo and run one step from the repository root; stop ``job`` if the step fails."""
    shown = " ".join(shlex.quote(str(c)) for c in cmd).replace(sys.executable, "python")
    print(f"\n$ {shown}", flush=True)
    rc = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if rc:
        raise SystemExit(f"{job}: step failed with exit status {rc}: {shown}")
