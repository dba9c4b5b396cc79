"""Shared fixtures: caches in a temporary folder (never ~/.cache), the tiny backbone and scenes
of the engine tests (helpers in engine_helpers.py); and a session check of the sparse backends:
``POINTSEG_REQUIRE_BACKENDS=minkowski,spconv`` (set by CI) makes a backend that does not import an
error instead of a row of "<name> not installed" skips, so a broken or missing build cannot pass
as green."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from engine_helpers import TINY, MinkUNetTiny, make_data

from pointseg.models import BACKBONES

REQUIRE_ENV = "POINTSEG_REQUIRE_BACKENDS"


def pytest_sessionstart(session: pytest.Session) -> None:
    from pointseg.sparse.backends import BACKENDS, import_error

    wanted = [n.strip() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip()]
    unknown = [n for n in wanted if n not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"{REQUIRE_ENV}: unknown backend(s) {unknown}; choose from {sorted(BACKENDS)}")
    missing = [f"{name} ({import_error(name)})" for name in wanted if import_error(name)]
    if missing:
        hint = "; `make minkowski` builds MinkowskiEngine" if any(m.startswith("minkowski") for m in missing) else ""
        raise pytest.UsageError(f"{REQUIRE_ENV} names backends that do not import: {'; '.join(missing)}{hint}")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield
    mp.undo()


@pytest.fixture
def one_thread():
    """Run on one thread (on a shared 2-core machine, two OpenMP threads spin-wait and tiny ops
    slow down tenfold; results are the same), and restore the count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_backbone(monkeypatch, one_thread):
    """Register MinkUNetTiny; run on one thread (``one_thread``)."""
    monkeypatch.setitem(BACKBONES, TINY, MinkUNetTiny)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("scenes"))
