"""The VM the course runs in: Debian's vagrant validates the Vagrantfile (skipped where
vagrant is not installed), and it provisions what the course needs."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT = Path(__file__).resolve().parents[2] / "vagrant"


@pytest.mark.skipif(not shutil.which("vagrant"), reason="vagrant is not installed")
def test_vagrant_validate(tmp_path):
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "home"),
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), VAGRANT_CHECKPOINT_DISABLE="1")
    done = subprocess.run(["vagrant", "validate"], cwd=VAGRANT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


def test_vm_provisions_the_course():
    text = (VAGRANT / "Vagrantfile").read_text()
    assert "scripts/setup.sh" in text and "/usr/local/bin/netlab" in text
    setup = (VAGRANT.parent / "scripts" / "setup.sh").read_text()
    assert "graphviz" in setup
    assert "netlab course start" in (VAGRANT / "README.md").read_text()
