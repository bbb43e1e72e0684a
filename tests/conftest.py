"""Shared fixtures. Integration tests build real labs; every lab is removed, pass or fail."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LABS = REPO / "labs"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: builds network namespaces")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab_name():
    """A unique lab name per test, so tests never collide with each other or a user's lab.

    The logs a failed `up` keeps for its user (state.FAILED) are the test's to remove."""
    import shutil
    from netlab import state
    name = "t" + uuid.uuid4().hex[:8]
    yield name
    failed = state.STATE_ROOT / state.FAILED
    for kept in failed.glob(f"{name}*"):
        shutil.rmtree(kept, ignore_errors=True)
    try:
        failed.rmdir()                 # only if no other failed run is kept there
    except OSError:
        pass


@pytest.fixture
def make_lab(lab_name, tmp_path):
    """Build a lab from a directory or from manifest text; torn down after the test, always."""
    from netlab import engine

    built: list[str] = []

    def build(source=None, *, manifests: str | None = None, name: str | None = None, **kwargs):
        if manifests is not None:
            source = tmp_path / f"lab-{len(built)}"
            source.mkdir()
            (source / "lab.yaml").write_text(manifests)
        lab = name or (lab_name if not built else f"{lab_name}{len(built)}")
        built.append(lab)
        return engine.up(source, name=lab, **kwargs)

    yield build
    for lab in built:
        engine.teardown(lab)
    leftovers = [n for lab in built for n in engine.lab_namespaces(lab)]
    assert not leftovers, f"namespaces left behind: {leftovers}"
