"""The CI example (examples/ci) cannot rot: its suite runs here as a user's CI would run it
(a separate pytest, the plugin found through its entry point), and its workflow names paths
and commands that exist."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ci"

pytestmark = pytest.mark.root
pytest_plugins = ["pytester"]


def test_the_example_suite_passes(tmp_path):
    junit = tmp_path / "junit.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider",
                             "-o", "timeout_method=signal", "--timeout", "300", f"--junitxml={junit}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-2000:]
    assert 'failures="0"' in junit.read_text()


def test_the_workflow_names_what_exists():
    flow = yaml.safe_load((EXAMPLE / "github-actions.yml").read_text())
    steps = flow["jobs"]["netlab"]["steps"]
    script = "\n".join(s.get("run", "") for s in steps)
    assert flow["jobs"]["netlab"]["runs-on"] == "ubuntu-latest"
    for path in ("examples/ci/tests", "examples/ci/labs/web"):
        assert path in script and (REPO / path).exists(), path
    assert "netlab verify -L ci-web -o junit" in script
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'name = "k8s-netlab"' in pyproject and "[project.entry-points.pytest11]" in pyproject


def test_the_readme_example_runs_as_written(pytester):
    """Docs are code: the README's pytest example, run as a user's test file from the repo."""
    section = (REPO / "README.md").read_text().split("## Labs in your own pytest suite")[1].split("\n## ")[0]
    code = section.split("```python\n")[1].split("```")[0]
    code = code.replace('"examples/ci/labs/web"', repr(str(EXAMPLE / "labs" / "web")))
    pytester.makepyfile(test_readme=code)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
