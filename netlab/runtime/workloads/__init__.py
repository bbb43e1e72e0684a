"""Built-in workloads: what a pod's container runs when its image is not a real command here.

The runtime calls `resolve()` to turn a container spec into an argv. A real command (or the
real redis-server) is exec'd; an argv starting with BUILTIN is one of netlab's own servers, run
by `run_builtin()` in the forked container process, or by `python -m netlab.runtime.workloads`.

Importing this package stays cheap (no http.server, no scapy): the workload modules load only
inside the container process that runs them.
"""
from __future__ import annotations

import importlib

from .images import BUILTIN, describe, redis_server_path, resolve

__all__ = ["BUILTIN", "describe", "redis_server_path", "resolve", "run_builtin"]

# workload name -> module that provides main(args: list[str]) -> int
_MODULES = {"netexec": "netexec", "guestbook": "guestbook", "pause": "pause",
            "kubedns": "kubedns", "dnsmasq": "dnsmasq", "echoserver": "echoserver"}


def run_builtin(argv: list[str]) -> int:
    """Run the built-in workload named by argv (`[BUILTIN, name, *args]`); return its exit code.

    Blocks until SIGTERM or SIGINT (exit 0). Call it in the process that should become the
    container, before it starts any thread.
    """
    from .serving import hold_termination_signals, log

    if len(argv) < 2 or argv[0] != BUILTIN or argv[1] not in _MODULES:
        log(f"{BUILTIN}: unknown workload {argv[1:2]}; known: {', '.join(sorted(_MODULES))}", fd=2)
        return 2
    name = argv[1]
    hold_termination_signals()
    module = importlib.import_module(f".{_MODULES[name]}", __name__)
    try:
        return module.main(list(argv[2:]))
    except OSError as exc:  # e.g. a port already in use: one clear line in the container log
        log(f"{name}: {exc}", fd=2)
        return 1
    except SystemExit as exc:  # its flags were refused (it logged why)
        return exc.code if isinstance(exc.code, int) else 2
