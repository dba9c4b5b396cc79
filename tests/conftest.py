"""Shared fixtures: caches in a temporary folder (never ~/.cache), the tiny backbone and scenes
of the engine tests (helpers in engine_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import TINY, MinkUNetTiny, make_data

from pointseg.models import BACKBONES


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield
    mp.undo()


@pytest.fixture
def tiny_backbone(monkeypatch):
    """Register MinkUNetTiny; run on one thread (on a shared 2-core machine, two OpenMP threads
    spin-wait and tiny ops slow down tenfold; results are the same)."""
    monkeypatch.setitem(BACKBONES, TINY, MinkUNetTiny)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("scenes"))
