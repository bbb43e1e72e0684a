"""How the agent sees a pod's port serve: sock_diag lookups agree with /proc/<pid>/net/tcp."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netlab.kernel import netns

pytestmark = pytest.mark.root

# A process in the namespace listening on 0.0.0.0:7001 and 127.0.0.1:7002, its address
# 10.0.0.5 on a veth; 7003 is bound to 10.0.0.6 only, 7004 has no listener at all.
SERVER = """
import socket, sys, time
subs = []
for host, port in (("0.0.0.0", 7001), ("127.0.0.1", 7002), ("10.0.0.6", 7003)):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(); subs.append(s)
print("listening", flush=True)
time.sleep(60)
"""


def test_sock_diag_lookup_matches_the_socket_table():
    name = f"netlab-listen{os.getpid()}"
    netns.create(name, mark="")
    proc = None
    try:
        for cmd in (["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"], ["ip", "link", "set", "d0", "up"],
                    ["ip", "addr", "add", "10.0.0.5/24", "dev", "d0"], ["ip", "addr", "add", "10.0.0.6/24", "dev", "d0"]):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", SERVER],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "listening"
        pid = proc.pid                   # `ip netns exec` execs the command: the server itself
        ports = [7001, 7002, 7003, 7004]
        # 7001 (any address) and 7002 (loopback) take connections to 10.0.0.5; 7003 does not.
        assert netns.tcp_listening(pid, ports, "10.0.0.5") == {7001, 7002}
        assert netns.tcp_listening(pid, ports, "10.0.0.6") == {7001, 7002, 7003}
        assert netns.listening_tcp_ports(pid) == {7001, 7002, 7003}
        # Many at once (the agent's way), each answered for its own ports and address.
        assert netns.tcp_listening_many([(pid, ports, "10.0.0.5"), (pid, [7004], "10.0.0.5"),
                                         (pid, [7003], "10.0.0.6")]) == [{7001, 7002}, set(), {7003}]
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=5)
        netns.delete(name)
