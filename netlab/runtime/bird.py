"""BIRD (Debian's bird2) as the calico backend's BGP daemon: one per node, supervised by the
agent as a node daemon, configured as calico-node's confd configures it (netlab.plan.bird).

Its configuration and control socket live in the lab's state directory,
/run/netlab/<lab>/bird/<node>.conf and <node>.ctl. The provider below rewrites a node's file
when the node's blocks or the BGP topology change and tells that BIRD to `configure`, as
confd does after rendering its templates. `birdc -s <node>.ctl` talks to it; `netlab exec
--node NODE -- birdc ...` adds the -s for you.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from .. import state
from ..model.errors import StateError
from .daemons import DaemonSpec, provider

_pending: set[tuple[str, str]] = set()      # (lab, node): a rewritten config not yet loaded


def bird_dir(lab: str) -> Path:
    return state.lab_dir(lab) / "bird"


def config_path(lab: str, node: str) -> Path:
    return bird_dir(lab) / f"{node}.conf"


def socket_path(lab: str, node: str) -> Path:
    return bird_dir(lab) / f"{node}.ctl"


def bird_missing() -> str:
    """Why BIRD cannot run here ("" if it can)."""
    missing = [b for b in ("bird", "birdc") if not shutil.which(b)]
    return (f"{' and '.join(missing)} not found: install Debian's bird2 (scripts/setup.sh does)"
            if missing else "")


def write_config(lab: str, node: str, text: str) -> bool:
    """Write a node's config if it changed (atomically); True when it did."""
    path = config_path(lab, node)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def query(lab: str, node: str, command: str, timeout: float = 5.0) -> str:
    """One birdc command over the node's control socket; its reply without the reply codes.

    BIRD's protocol: a greeting line, then for each command lines "CODE-text" (more follow),
    " text" (continuation) and a last "CODE text"; codes 0xxx/1xxx/2xxx are answers, 8xxx
    and 9xxx errors."""
    path = socket_path(lab, node)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise StateError(f"BIRD on {node} is not running (no control socket at {path})") from None
        reader = sock.makefile("r", encoding="utf-8", errors="replace")
        reader.readline()                             # 0001 BIRD 2.0.12 ready.
        sock.sendall(command.encode() + b"\n")
        lines = []
        for line in reader:
            line = line.rstrip("\n")
            code, sep = line[:4], line[4:5]
            if code.isdigit() and sep in ("-", " "):
                if code[0] in "89":
                    raise StateError(f"BIRD on {node}: {command}: {line[5:]}")
                lines.append(line[5:])
                if sep == " ":
                    break
            else:
                lines.append(line[1:] if line.startswith(" ") else line)
        return "\n".join(lines)
    except OSError as exc:
        raise StateError(f"BIRD on {node}: {command}: {exc}") from None
    finally:
        sock.close()


def protocols(lab: str, node: str) -> dict[str, dict]:
    """`show protocols`: {name: {"proto": BGP, "state": up, "info": Established, ...}}."""
    out = {}
    for line in query(lab, node, "show protocols").splitlines()[1:]:
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        out[parts[0]] = {"proto": parts[1], "table": parts[2], "state": parts[3], "since": parts[4],
                         "info": parts[5].strip() if len(parts) > 5 else ""}
    return out


def _reconfigure(lab: str, node: str) -> None:
    key = (lab, node)
    if key not in _pending or not socket_path(lab, node).exists():
        return
    try:
        query(lab, node, "configure")
    except StateError:
        return                 # not up yet: it reads the new file when it starts, or next round
    _pending.discard(key)


@provider
def bird(cluster) -> list[DaemonSpec]:
    """backend calico: one BIRD per node whose namespace exists (`up` builds them while the
    agent already runs), its configuration kept in line with the node's blocks and peers."""
    if cluster.config.backend != "calico":
        return []
    from ..kernel import netns
    from ..plan.bird import render
    specs = []
    for n in cluster.nodes:
        if write_config(cluster.name, n.name, render(cluster, n)):
            _pending.add((cluster.name, n.name))
        _reconfigure(cluster.name, n.name)
        if not netns.is_netns(n.netns):
            continue
        specs.append(DaemonSpec("bird", n.name, n.netns, argv=(
            "bird", "-f", "-c", str(config_path(cluster.name, n.name)),
            "-s", str(socket_path(cluster.name, n.name)))))
    return specs


def missing_routes(cluster) -> list[str]:
    """The other nodes' blocks some node has no BGP-learned route for yet ("node: block")."""
    import socket as _socket
    from ..kernel import netns
    RTPROT_BIRD = 12
    missing = []
    for node in cluster.nodes:
        with netns.open_netlink(node.netns) as ipr:
            have = {f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.get_routes(family=_socket.AF_INET)
                    if r["proto"] == RTPROT_BIRD}
        missing += [f"{node.name}: {b}" for other in cluster.nodes if other.name != node.name
                    for b in cluster.ipam.blocks_of(other.name) if b not in have]
    return missing


def wait_converged(cluster, timeout: float) -> list[str]:
    """Wait until every node has learned every other node's blocks over BGP (bounded);
    return what is still missing."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        missing = missing_routes(cluster)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.1)
