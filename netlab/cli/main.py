"""netlab's command line. Commands are thin: parse options, call the library, render."""
from __future__ import annotations

import sys
import traceback
from typing import Optional

import typer

from ..model.errors import LabError

app = typer.Typer(
    name="netlab", no_args_is_help=True, add_completion=False,
    help="Build a real Kubernetes network on this machine out of kernel objects, and prove it "
         "with packets. Most commands need root.",
    context_settings={"help_option_names": ["-h", "--help"]})

VERBOSE = {"on": False}


@app.callback()
def _global(verbose: bool = typer.Option(False, "--verbose", "-v",
                                         help="Show tracebacks for errors.")) -> None:
    VERBOSE["on"] = verbose


def _register() -> None:
    from . import get_cmds, lab_cmds, exec_cmds  # noqa: F401  (commands register themselves)
    for optional in ("svc_cmds", "verify_cmds", "dns_cmds", "agent_cmds"):
        try:
            __import__(f"{__package__}.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{optional}":
                raise


def main(argv: Optional[list[str]] = None) -> None:
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except LabError as exc:
        if VERBOSE["on"]:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if VERBOSE["on"]:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with -v for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
