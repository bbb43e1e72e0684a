"""The course: every lesson's lab comes up with `course start`, every command its README marks
runnable (```sh run) works against the live lab and prints what the README says, and each
README ends with `course check` passing. One lab per lesson, up once, all its blocks in order.
Also: course list/check/reset through the CLI, progress outside the repository."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import course
from netlab.course import docs

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LESSONS = [x for x in course.lessons() if not x.needs]


@pytest.fixture
def course_env(lab_name, tmp_path, monkeypatch):
    monkeypatch.setenv("NETLAB_COURSE_LAB", lab_name)
    monkeypatch.setenv("NETLAB_COURSE_HOME", str(tmp_path / "home"))
    yield lab_name
    from netlab import engine
    engine.teardown(lab_name)
    assert not engine.lab_namespaces(lab_name)


def run_shell(line: str, lab: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", NETLAB_LAB=lab)
    # The learner types sudo; the test is root already (and sudo may be absent).
    script = 'sudo() { "$@"; }\n' + line
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def pod_names(lab: str) -> list[str]:
    from netlab.probe.lab import LabView
    return [p.meta.name for p in LabView.load(lab).pods]


def svg_body(svg: str) -> str:
    """The drawing without Graphviz's comments (its version line)."""
    return re.sub(r"<!--.*?-->", "", svg, flags=re.S).strip()


def check_picture(lesson, lab: str) -> None:
    """The README's picture of its own lab (graph.svg in its directory) is what `netlab
    graph --stable` draws of the live lab; NETLAB_UPDATE_GRAPHS=1 rewrites it."""
    if "](graph.svg)" not in (lesson.dir / "README.md").read_text():
        return
    if not shutil.which("dot"):
        pytest.skip("Graphviz (dot) is not installed")
    from netlab import graph
    from netlab.probe.lab import LabView
    drawn = graph.render(graph.to_dot(graph.describe(LabView.load(lab), stable=True)), "svg").decode()
    committed = lesson.dir / "graph.svg"
    if os.environ.get("NETLAB_UPDATE_GRAPHS"):
        committed.write_text(drawn)
    assert committed.is_file(), f"{committed} missing: run with NETLAB_UPDATE_GRAPHS=1"
    assert svg_body(committed.read_text()) == svg_body(drawn), \
        f"{committed} is not the live lab's picture: run with NETLAB_UPDATE_GRAPHS=1"


@pytest.mark.parametrize("lesson", LESSONS, ids=[x.id for x in LESSONS])
def test_lesson_readme_runs(lesson, course_env):
    lab = course_env
    started = time.perf_counter()
    course.start(lesson)
    up = time.perf_counter() - started
    check_picture(lesson, lab)
    cmds = docs.commands(lesson.dir / "README.md")
    assert cmds, f"{lesson.id}: no runnable blocks"
    assert any("course check" in c.line for c in cmds), f"{lesson.id}: README never runs its check"
    run_blocks(lesson.id, cmds, lab)
    print(f"{lesson.id}: up {up:.1f} s, {len(cmds)} commands, total {time.perf_counter() - started:.1f} s")


def run_blocks(what: str, cmds: list, lab: str, rename=lambda line: line) -> None:
    """Type each command (pod placeholders resolved, then rename applied) and hold its exit
    code and output to what the README says under it."""
    for cmd in cmds:
        line = rename(docs.resolve(cmd.line, pod_names(lab)) if "-xxxxx" in cmd.line else cmd.line)
        out = run_shell(line, lab)
        said = f"{what}: `{line}` exit {out.returncode}\n{out.stdout}\n{out.stderr}"
        assert out.returncode == cmd.exit, said
        for pattern in cmd.expect:
            assert re.search(pattern, out.stdout, re.M), f"expected /{pattern}/ in\n{said}"
        for pattern in cmd.reject:
            assert not re.search(pattern, out.stdout, re.M), f"did not expect /{pattern}/ in\n{said}"


def test_guestbook_walkthrough_runs(lab_name):
    """labs/guestbook/README.md, the walk-through lesson 17 points to: every command as the
    README has it, but with a lab name of the test's own; torn down even when it fails."""
    from netlab import engine
    cmds = docs.commands(REPO / "labs" / "guestbook" / "README.md")
    assert cmds[0].line == "sudo netlab up labs/guestbook" and cmds[-1].line == "sudo netlab down guestbook"

    def rename(line: str) -> str:
        return (line.replace("netlab up labs/guestbook", f"netlab up labs/guestbook --name {lab_name}")
                    .replace("netlab down guestbook", f"netlab down {lab_name}"))
    try:
        run_blocks("labs/guestbook", cmds, lab_name, rename)
        assert not engine.lab_namespaces(lab_name), "`netlab down` left namespaces"
    finally:
        engine.teardown(lab_name)


def test_course_cli_list_check_reset(course_env, tmp_path):
    lab = course_env
    netlab = [str(VENV_BIN / "netlab")]
    env = dict(os.environ)
    first = course.lessons()[0]
    out = subprocess.run(netlab + ["course", "list", "-o", "json"], env=env, capture_output=True, text=True)
    rows = json.loads(out.stdout)
    assert rows[0]["status"] == "not started" and len(rows) == len(course.lessons())
    assert subprocess.run(netlab + ["course", "start", first.number], env=env).returncode == 0
    out = subprocess.run(netlab + ["course", "check", "-o", "json"], env=env, capture_output=True, text=True)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["passed"], out.stdout
    # An exercise not done yet: exit 1, with a hint.
    out = subprocess.run(netlab + ["course", "check", "16", "-o", "json"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    todo = [i for i in json.loads(out.stdout)["items"] if i["status"] != "pass"]
    assert [i["id"] for i in todo] == ["scale-to-5"] and "scale" in todo[0]["hint"]
    rows = json.loads(subprocess.run(netlab + ["course", "list", "-o", "json"], env=env,
                                     capture_output=True, text=True).stdout)
    assert rows[0]["status"] == "running (passed)"
    progress = course.progress_file()
    assert progress.is_file() and REPO not in progress.parents
    assert subprocess.run(netlab + ["course", "reset"], env=env, capture_output=True).returncode == 0
    assert lab not in __import__("netlab.labs", fromlist=["x"]).running_labs()
    rows = json.loads(subprocess.run(netlab + ["course", "list", "-o", "json"], env=env,
                                     capture_output=True, text=True).stdout)
    assert rows[0]["status"] == "passed"
