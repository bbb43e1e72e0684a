"""pause: hold the container, doing nothing, until SIGTERM (like the pod's pause container)."""
from __future__ import annotations

from .serving import log, wait_for_termination


def main(args: list[str]) -> int:
    log("pause: holding until SIGTERM")
    wait_for_termination()
    return 0
