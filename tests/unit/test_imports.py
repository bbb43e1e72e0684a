"""Every netlab module imports on its own, first, in a fresh interpreter: a cycle between two
modules shows only when the wrong one comes first (model/ingress.py did, from the agent's
ingress reload). No root needed."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import netlab

ROOT = Path(netlab.__file__).resolve().parent.parent


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(netlab.__path__, "netlab.")
                  if not m.name.endswith("__main__"))


def import_alone(name: str) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    return name, (done.stderr.strip().splitlines() or ["?"])[-1] if done.returncode else ""


def test_every_module_imports_first():
    names = modules()
    assert "netlab.model.ingress" in names and len(names) > 50
    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = {name: why for name, why in pool.map(import_alone, names) if why}
    assert failed == {}
