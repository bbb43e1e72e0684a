"""The server's side of a connection: who a pod's kernel thinks it is talking to.

/proc/PID/net/tcp lists the TCP sockets of PID's network namespace; read for a pod's holder
process, its ESTABLISHED entries on a port are the connections the pod took there, with the
peer address as the pod sees it: the client's own address when nothing rewrote it, a node's
when it was masqueraded. This works whatever program serves the port (netexec, redis-server,
the guestbook). An entry with an inode has been accept()ed by the server; one without still
waits in the listen queue.
"""
from __future__ import annotations

import socket
import struct

ESTABLISHED = "01"
LISTEN = "0A"


def _decode(hex_addr: str) -> str:
    ip, port = hex_addr.split(":")
    return f"{socket.inet_ntoa(struct.pack('<I', int(ip, 16)))}:{int(port, 16)}"


def _lines(pid: int) -> list[list[str]]:
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return [line.split() for line in f.read().splitlines()[1:]]
    except OSError:             # the pod's holder is gone: nothing can be connected there
        return []


def listening(pid: int) -> dict[int, set[str]]:
    """{port: addresses} of the TCP sockets listening in PID's namespace."""
    ports: dict[int, set[str]] = {}
    for fields in _lines(pid):
        if fields[3] == LISTEN:
            addr, port = _decode(fields[1]).rsplit(":", 1)
            ports.setdefault(int(port), set()).add(addr)
    return ports


def established(pid: int, local_port: int) -> dict[str, bool]:
    """{peer "ip:port": accepted?} for ESTABLISHED sockets on local_port in PID's namespace."""
    peers = {}
    for fields in _lines(pid):
        if fields[3] == ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == local_port:
            peers[_decode(fields[2])] = fields[9] != "0"
    return peers
