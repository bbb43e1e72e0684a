"""netlab's command line. Commands are thin: parse options, call the library, render."""
from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Optional

import typer

from ..model.errors import LabError

app = typer.Typer(
    name="netlab", no_args_is_help=True, add_completion=False,
    help="Build a real Kubernetes network on this machine out of kernel objects, and prove it "
         "with packets. Most commands need root.",
    context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False,
    # Plain help and usage errors: rich's formatter costs about 170 ms of imports on every
    # `--help` and every mistyped option.
    rich_markup_mode=None)

VERBOSE = {"on": False}


class Terminated(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP arrived: unwind, so `up` rolls back what it built. (Not a
    KeyboardInterrupt: click would turn that into "Aborted!" and exit code 1.)"""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame) -> None:
    # Later signals (timeout, CI and terminals often send more than one) must not interrupt
    # the rollback the first one starts; SIGKILL remains for the impatient.
    for sig in _HANDLED:
        signal.signal(sig, lambda *_: None)
    raise Terminated(signum)


_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_signal_handlers() -> None:
    for sig in _HANDLED:
        signal.signal(sig, _on_signal)


@app.callback()
def _global(verbose: bool = typer.Option(False, "--verbose", "-v",
                                         help="Show tracebacks for errors.")) -> None:
    VERBOSE["on"] = verbose
    from .. import state
    state.check_root()       # refuse a state directory someone else could write to


def _register() -> None:
    from . import get_cmds, lab_cmds, exec_cmds  # noqa: F401  (commands register themselves)
    for optional in ("svc_cmds", "verify_cmds", "dns_cmds", "fault_cmds", "agent_cmds", "node_cmds", "course_cmds",
                     "graph_cmds"):
        try:
            __import__(f"{__package__}.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{optional}":
                raise


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and a distinct exit code."""
    os.umask(0o077)          # state, status (containers' environments) and logs: owner only
    install_signal_handlers()
    try:
        _register()      # inside: a signal during these imports must unwind like any other
        # standalone mode: usage errors print click's usage message and exit 2 by themselves.
        app(args=argv, prog_name="netlab")
    except LabError as exc:
        if VERBOSE["on"]:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated as exc:
        print("interrupted" if exc.signum == signal.SIGINT else
              f"terminated by {signal.Signals(exc.signum).name}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    except OSError as exc:
        if VERBOSE["on"]:
            raise
        print(f"error: {exc} (run with -v for the traceback)", file=sys.stderr)
        sys.exit(1)
