"""course: the lessons in labs/NN-*/, one lab per idea, with checks that say what is done."""
from __future__ import annotations

import json
import time
from typing import Optional

import typer

from .main import app

course = typer.Typer(no_args_is_help=True, help="The course: one small lab per idea of the documents, "
                                               "with exercises that check themselves.")
app.add_typer(course, name="course")


@course.command("list")
def list_(output: str = typer.Option("table", "--output", "-o", help="table or json.")) -> None:
    """The lessons in teaching order, with your status: not started, running, passed or needs ..."""
    from .. import course as lib
    from ..labs import running_labs

    progress = lib.load_progress()
    running = running_labs()
    rows = [{"lesson": x.id, "title": x.title, "status": lib.status_of(x, progress, running),
             "seed": x.seed} for x in lib.lessons()]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['lesson']:<24} {r['status']:<22} {r['title']}")


@course.command()
def start(lesson: str = typer.Argument(..., help="Lesson: its directory name or number.")) -> None:
    """Bring up the lesson's lab (replacing a running lesson lab); then read its README."""
    from .. import course as lib
    from .. import engine

    engine.require_root()
    x = lib.find(lesson)
    seconds = lib.start(x)
    typer.echo(f"lesson {x.id}: {x.title}\nlab {lib.course_lab()} is up ({seconds:.1f} s); "
               f"read {x.dir.relative_to(lib.LABS.parent)}/README.md, then: netlab course check")


@course.command()
def check(lesson: Optional[str] = typer.Argument(None, help="Lesson (default: the running one)."),
          output: str = typer.Option("table", "--output", "-o", help="table or json.")) -> None:
    """Run the lesson's checks against the running lab; exit 0 only when every one passes."""
    from .. import course as lib
    from .. import engine
    from ..model.errors import StateError

    engine.require_root()
    name = lesson or lib.load_progress().get("running")
    if not name:
        raise StateError("no lesson is running: start one with `netlab course start LESSON`")
    x = lib.find(name)
    if x.needs:
        raise StateError(f"lesson {x.id} needs {x.needs}: skipped")
    started = time.perf_counter()
    items = lib.check(x)
    passed = lib.record(x, items)
    seconds = time.perf_counter() - started
    if output == "json":
        typer.echo(json.dumps({"lesson": x.id, "passed": passed, "seconds": round(seconds, 2),
                               "items": [i.to_json() for i in items]}, indent=2))
    else:
        for i in items:
            mark = {"pass": "done", "fail": "todo"}.get(i.status, i.status)
            typer.echo(f"[{mark}] {i.kind:<8} {i.id}: {i.summary}")
            if i.hint:
                typer.echo(f"         hint: {i.hint}")
        done = sum(i.status == "pass" for i in items)
        typer.echo(f"{done}/{len(items)} done in {seconds:.1f} s" + (f": lesson {x.id} passed" if passed else ""))
    if not passed:
        raise typer.Exit(1)


@course.command()
def reset(all_progress: bool = typer.Option(False, "--all", help="Also forget which lessons passed.")) -> None:
    """Remove the running lesson lab (and with --all, your progress)."""
    from .. import course as lib
    from .. import engine

    engine.require_root()
    for line in lib.reset(all_progress) or ["nothing to reset"]:
        typer.echo(line)
