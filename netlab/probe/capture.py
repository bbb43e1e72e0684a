"""Packet capture with scapy inside a lab namespace, while the caller sends traffic.

scapy reads the interfaces and routes of its process's namespace when it is imported, so it
is never imported here: a forked child (single-threaded, so netns.enter moves the whole
process) enters the namespace, then imports scapy and sniffs. The parent waits until the
sniffer's sockets are open, runs its probe, then tells the child to stop. The child decodes
the frames (with a function the caller gives, run in the child) and sends them back as
JSON. Bounded everywhere: `count` frames, `timeout` seconds of sniffing, and an alarm that
kills a child that outlives both.
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import time
from typing import Any, Callable, Optional, TypeVar

from ..kernel import netns

T = TypeVar("T")
Decoder = Callable[[Any], Optional[dict]]     # a scapy packet -> a JSON-able dict, or None to skip
START_WAIT = 15.0                             # the child's scapy import and socket set-up
DRAIN = 0.2                                   # frames already in the socket buffer when told to stop


class CaptureError(RuntimeError):
    pass


def _child(ns: str, ifaces: list[str], decode: Decoder, count: int, timeout: float,
           out_fd: int, stop_fd: int) -> None:
    signal.alarm(int(START_WAIT + timeout + 5))     # never outlive the parent's patience
    try:
        netns.enter(ns)
        logging.getLogger("scapy").setLevel(logging.ERROR)
        import scapy.layers.inet  # noqa: F401  (dissectors, registered by import)
        import scapy.layers.l2  # noqa: F401
        import scapy.layers.vxlan  # noqa: F401
        from scapy.sendrecv import AsyncSniffer

        sniffer = AsyncSniffer(iface=ifaces, count=count, store=True,
                               lfilter=lambda p: decode(p) is not None,
                               started_callback=lambda: os.write(out_fd, b"R"))
        sniffer.start()
        if select.select([stop_fd], [], [], timeout)[0]:     # the parent's "done" (or time is up)
            time.sleep(DRAIN)
        if sniffer.running:
            sniffer.stop(join=True)
        else:
            sniffer.join()
        payload = {"packets": [decode(p) for p in sniffer.results or []]}
    except BaseException as exc:        # reported to the parent, which raises it
        payload = {"error": f"{type(exc).__name__}: {exc}"}
    os.write(out_fd, json.dumps(payload).encode())


def _reap(pid: int, grace: float = 1.0) -> None:
    """Wait for the child; one that is still busy after `grace` seconds is killed."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def capture(ns: str, ifaces: list[str], decode: Decoder, action: Callable[[], T],
            count: int = 16, timeout: float = 3.0) -> tuple[T, list[dict]]:
    """Sniff (at most `count` frames that `decode` accepts, for at most `timeout` s) on `ifaces`
    of namespace `ns` while action() runs; return action's result and the decoded frames."""
    out_r, out_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(out_r)
            os.close(stop_w)
            _child(ns, ifaces, decode, count, timeout, out_w, stop_r)
        finally:
            os._exit(0)          # never return into the parent's code (or run its atexit)
    os.close(out_w)
    os.close(stop_r)
    try:
        if not select.select([out_r], [], [], START_WAIT)[0]:
            raise CaptureError(f"the capture in {ns} did not start within {START_WAIT:g}s")
        data = os.read(out_r, 1)
        if data == b"R":        # sniffing: send the traffic (otherwise `data` starts an error report)
            data = b""
            result = action()
            try:
                os.write(stop_w, b"x")
            except BrokenPipeError:       # the child is gone already: its report says why
                pass
        for _ in range(1024):                 # bounded reads until the child closes the pipe
            if not select.select([out_r], [], [], timeout + 5)[0]:
                break
            chunk = os.read(out_r, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(stop_w)
        os.close(out_r)
        _reap(pid)
    reply = json.loads(data or b'{"error": "the capture process died"}')
    if "error" in reply:
        raise CaptureError(f"capture in {ns}: {reply['error']}")
    return result, reply["packets"]
