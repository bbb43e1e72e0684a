"""The course: labs/NN-*/ lessons, each a lab (its own lab.yaml, or `lab:` naming another
lesson's directory), a README and a lesson.yaml listing its checks.

lesson.yaml:
    title: Pods and the pause container
    seed: 002_f4d7489521384418.txt
    lab: ../01-pod            # optional: another directory's lab (default: this one)
    needs: calico backend     # optional: the lesson waits for a feature; skipped, not faked
    checks: [container-localhost, pod-shared-namespaces]     # verify's checks, by id
    exercises:                                              # the lesson's own checks
      - id: scale-to-5
        title: Scale the RC web to 5 replicas
        hint: netlab scale rc web --replicas 5
        check: {kind: serving-pods, service: web, count: 5}

Progress (which lessons passed, which one runs) is kept per user, never in the repository:
$NETLAB_COURSE_HOME, else $XDG_DATA_HOME/netlab, else ~/.local/share/netlab.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from ..model.errors import InvalidError, NotFoundError

LABS = Path(__file__).resolve().parent.parent.parent / "labs"


def course_lab() -> str:
    """The name every lesson's lab runs under (one lesson lab at a time)."""
    return os.environ.get("NETLAB_COURSE_LAB", "course")


@dataclass
class Exercise:
    id: str
    title: str
    hint: str
    check: dict


@dataclass
class Lesson:
    id: str                     # the directory name, e.g. 07-clusterip
    dir: Path
    title: str
    seed: str
    lab_dir: Path
    checks: list[str]
    exercises: list[Exercise] = field(default_factory=list)
    needs: Optional[str] = None

    @property
    def number(self) -> str:
        return self.id.split("-", 1)[0]


def lessons(root: Path = LABS) -> list[Lesson]:
    found = []
    for d in sorted(root.iterdir()):
        spec = d / "lesson.yaml"
        if not (d.is_dir() and d.name[:2].isdigit() and spec.is_file()):
            continue
        doc = yaml.safe_load(spec.read_text()) or {}
        found.append(Lesson(
            id=d.name, dir=d, title=doc["title"], seed=doc.get("seed", ""),
            lab_dir=(d / doc.get("lab", ".")).resolve(), checks=list(doc.get("checks") or []),
            exercises=[Exercise(e["id"], e["title"], e.get("hint", ""), e["check"])
                       for e in doc.get("exercises") or []],
            needs=doc.get("needs")))
    return found


def find(name: str, root: Path = LABS) -> Lesson:
    """A lesson by directory name, number (7 or 07) or name without the number."""
    all_ = lessons(root)
    for lesson in all_:
        if name in (lesson.id, lesson.number, lesson.id.split("-", 1)[1]) or \
                (name.isdigit() and int(name) == int(lesson.number)):
            return lesson
    raise NotFoundError(f'no lesson "{name}" (lessons: {", ".join(x.id for x in all_)})')


# ------------------------------------------------------------------ progress

def progress_file() -> Path:
    base = os.environ.get("NETLAB_COURSE_HOME")
    if not base:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        base = str(Path(data) / "netlab")
    return Path(base) / "course.json"


def load_progress() -> dict:
    try:
        return json.loads(progress_file().read_text())
    except (OSError, ValueError):
        return {"passed": {}, "running": None}


def save_progress(progress: dict) -> None:
    path = progress_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(progress, indent=2))
    tmp.replace(path)


def status_of(lesson: Lesson, progress: dict, running_labs: list[str]) -> str:
    if lesson.needs:
        return f"needs {lesson.needs}"
    if progress.get("running") == lesson.id and course_lab() in running_labs:
        return "running" + (" (passed)" if lesson.id in progress.get("passed", {}) else "")
    if lesson.id in progress.get("passed", {}):
        return "passed"
    return "not started"


# ------------------------------------------------------------------ start / reset

def start(lesson: Lesson, progress_cb=None) -> float:
    """Bring up the lesson's lab as the course lab, replacing whichever lesson lab runs."""
    from .. import engine
    from ..labs import running_labs
    if lesson.needs:
        raise InvalidError(f"lesson {lesson.id} needs {lesson.needs}: not available yet")
    started = time.perf_counter()
    if course_lab() in running_labs():
        engine.teardown(course_lab())
    kwargs = {"progress": progress_cb} if progress_cb else {}
    engine.up(lesson.lab_dir, name=course_lab(), wait_ready=True, **kwargs)
    progress = load_progress()
    progress["running"] = lesson.id
    save_progress(progress)
    return time.perf_counter() - started


def reset(all_progress: bool = False) -> list[str]:
    """Remove the course lab (and with all_progress, forget what passed)."""
    from .. import engine
    from ..labs import running_labs
    done = []
    if course_lab() in running_labs():
        engine.teardown(course_lab())
        done.append(f"lab {course_lab()} removed")
    progress = load_progress()
    progress["running"] = None
    if all_progress:
        progress["passed"] = {}
        done.append("progress forgotten")
    save_progress(progress)
    return done


# ------------------------------------------------------------------ check

@dataclass
class Item:
    id: str
    kind: str                   # check (verify's) or exercise
    title: str
    status: str                 # pass, fail, n/a
    summary: str
    hint: str = ""

    def to_json(self) -> dict:
        return self.__dict__.copy()


def check(lesson: Lesson, lab: Optional[str] = None) -> list[Item]:
    """Run the lesson's verify checks and exercise checks against the running lab. A verify
    check that does not apply to the lab as it is counts as not done: the lesson is about it."""
    from ..probe import catalog
    from ..probe.lab import load_settled
    from .exercises import run_exercise

    view, _settled = load_settled(lab or course_lab())
    items = []
    for c in catalog.select(lesson.checks) if lesson.checks else []:
        r = c.run(view)
        status = r.status.value
        hint = ""
        if status == "n/a":
            status, hint = "fail", f"the lab has nothing this check is about yet: {c.needs}"
        elif status == "fail":
            hint = f"`netlab verify {c.id} -e` shows every probe"
        items.append(Item(c.id, "check", c.claim, status, r.summary, hint))
    for ex in lesson.exercises:
        ok, summary = run_exercise(view, ex.check)
        items.append(Item(ex.id, "exercise", ex.title, "pass" if ok else "fail", summary,
                          "" if ok else ex.hint))
    return items


def record(lesson: Lesson, items: list[Item]) -> bool:
    passed = all(i.status == "pass" for i in items)
    progress = load_progress()
    if passed:
        progress.setdefault("passed", {})[lesson.id] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save_progress(progress)
    return passed
