"""environment.yml (conda users) must list the same dependencies as pyproject.toml."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda package name → PyPI name


def _split(req: str) -> tuple[str, str]:
    req = req.split(";")[0].strip()
    m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"])
    wanted.update(_split(r) for r in project["optional-dependencies"]["spconv"])

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            found.update(_split(r) for r in dep["pip"])
            continue
        name, spec = _split(dep)
        if name not in ("python", "pip"):
            found[CONDA_NAMES.get(name, name)] = spec
    assert found == wanted


def test_ci_installs_the_cpu_torch_build():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "TORCH_SPEC=" in ci
