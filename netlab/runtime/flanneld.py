"""flanneld for the udp backend: netlab's own small encapsulator, one per node.

What flannel's udp backend does (backend/udp, its proxy in C): the route `<cluster CIDR> dev
flannel0` hands every cross-node packet to the TUN device flannel0; flanneld reads it (a bare
IP packet: no packet-information header), looks up the node that holds the destination's
subnet and sends the packet, unchanged, as the payload of one UDP datagram from its own
underlay address, port 8285, to that node's port 8285. The receiving flanneld writes the
payload into its own flannel0, and the node's route `<own subnet> dev cni0` delivers it (with
Canal, the pod's /32 route to its cali veth).

Lean on purpose, one read, one lookup, one send per packet, into preallocated buffers:

    flannel0 -> UDP   os.readv(tun, [buf]); table.get(dst >> shift); sock.sendto(view[:n], peer)
    UDP -> flannel0   sock.recv_into(buf); os.write(tun, view[:n])

Each direction has its own thread (the GIL is released in every system call, so both run at
once). The table (node subnet -> node address) is the file the lab's agent writes from the
lab's nodes; flanneld re-reads it on SIGHUP and when the file changes (checked once a
second by the main thread, never on the packet path). Unlike flannel's C proxy, it neither
decrements the inner TTL nor answers an unknown destination with ICMP: the kernel already
decremented it when it routed the packet into flannel0, and an unknown subnet is dropped.

Why Python: on a 2-core VM it carries ~0.48 Gbit/s of iperf3 TCP between pods on two nodes
(bench/bench_backends.py), above the few hundred Mbit/s aimed at; a throwaway C program with
the same loop (two threads, read/sendto, recv/write) reached ~0.74 Gbit/s in the same lab.
The extra speed was not worth a compiler in setup.sh and a program learners cannot read in
one sitting next to the rest of netlab.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from .. import state
from ..plan.network import TUN_DEV, UDP_PORT

TABLE_NAME = "flannel-subnets"
START_WAIT = 30.0             # for flannel0 and the node's address, made while `up` builds
BUF_SIZE = 65536
SO_RCVBUFFORCE = 33
RCVBUF = 1 << 20


def subnets_file(lab: str) -> Path:
    return state.lab_dir(lab) / TABLE_NAME


def render_table(entries: list[tuple[str, str]]) -> str:
    """One line per node: `SUBNET NODE-IP` (flannel's subnet leases, as text)."""
    return "".join(f"{subnet} {ip}\n" for subnet, ip in entries)


def write_table(lab: str, entries: list[tuple[str, str]]) -> bool:
    """Write the table if it changed (atomically); True when it did."""
    path = subnets_file(lab)
    text = render_table(entries)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def parse_table(text: str, port: int = UDP_PORT) -> tuple[int, dict[int, tuple[str, int]]]:
    """(shift, {subnet number: (node ip, port)}): the destination's subnet is dst >> shift.

    Every node subnet has the same prefix length (one lab, one nodeSubnetPrefix)."""
    shift, table = 0, {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        subnet, ip = line.split()
        net = ipaddress.IPv4Network(subnet)
        shift = 32 - net.prefixlen
        table[int(net.network_address) >> shift] = (ip, port)
    return shift, table


class Forwarder:
    def __init__(self, table_path: str, local_ip: str, port: int, tun_name: str):
        self.table_path = table_path
        self.local_ip, self.port, self.tun_name = local_ip, port, tun_name
        self.routes: list = [0, {}]           # [shift, table], replaced whole on reload
        self.mtime = 0.0

    # ------------------------------------------------------------ the table

    def reload(self) -> None:
        st = os.stat(self.table_path)
        with open(self.table_path) as f:
            text = f.read()
        shift, table = parse_table(text, self.port)
        # This node's own subnet never goes out through flannel0: with cni0 its route wins, and
        # with Canal (pods as /32 routes) a packet for an unused address of it would otherwise
        # come back to this flanneld, into flannel0 and out again until its TTL ran out.
        table = {k: v for k, v in table.items() if v[0] != self.local_ip}
        self.routes = [shift, table]          # one assignment: the packet thread sees old or new
        self.mtime = st.st_mtime
        peers = ", ".join(f"{ipaddress.IPv4Address(k << shift)}/{32 - shift}->{ip}"
                          for k, (ip, _) in sorted(table.items()))
        print(f"flanneld: {len(table)} subnets: {peers}", flush=True)

    def watch(self) -> None:
        """The main thread: SIGHUP or a changed file re-reads the table."""
        while True:
            time.sleep(1.0)
            try:
                changed = os.stat(self.table_path).st_mtime != self.mtime
            except FileNotFoundError:
                continue
            if changed:
                self.try_reload()

    def try_reload(self) -> None:
        """A table caught half-written or unreadable: keep the old one, try again next second."""
        try:
            self.reload()
        except (OSError, ValueError) as exc:
            print(f"flanneld: keeping the old table: {exc}", file=sys.stderr, flush=True)

    def on_hup(self, *_) -> None:
        self.try_reload()

    # ------------------------------------------------------------ set-up

    def open(self) -> None:
        """Attach to flannel0 and bind UDP port on the node's address; both appear while the
        lab is built, so wait for them (bounded)."""
        from ..kernel import tun
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                socket.if_nametoindex(self.tun_name)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"flanneld: no {self.tun_name} after {START_WAIT:g}s")
                time.sleep(0.01)
        self.tun = tun.open_tun(self.tun_name)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # The receiving side is the slower one (recv + TUN write in Python): a deeper socket
        # buffer (1 MiB, past rmem_max: SO_RCVBUFFORCE) rides out a sender's burst instead of
        # dropping it. Measured on 2 cores: ~4% of datagrams lost and ~400 Mbit/s with the
        # default 208 KiB, ~0.1% and about the same throughput with this.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        while True:
            try:
                self.sock.bind((self.local_ip, self.port))
                break
            except OSError as exc:
                if exc.errno != 99 or time.monotonic() > deadline:      # EADDRNOTAVAIL: eth0 not yet addressed
                    raise
                time.sleep(0.01)

    # ------------------------------------------------------------ the two directions

    def tun_to_udp(self) -> None:
        buf = bytearray(BUF_SIZE)
        view = memoryview(buf)
        bufs = [buf]
        readv, sendto, dst_of = os.readv, self.sock.sendto, struct.Struct("!I").unpack_from
        tun = self.tun
        while True:
            n = readv(tun, bufs)
            shift, table = self.routes
            peer = table.get(dst_of(buf, 16)[0] >> shift)
            if peer is not None and n >= 20:
                try:
                    sendto(view[:n], peer)
                except OSError:
                    pass               # a full socket buffer or an unreachable peer: a lost packet

    def udp_to_tun(self) -> None:
        buf = bytearray(BUF_SIZE)
        view = memoryview(buf)
        recv_into, write = self.sock.recv_into, os.write
        tun = self.tun
        while True:
            n = recv_into(buf)
            try:
                write(tun, view[:n])
            except OSError:
                pass                   # not an IP packet the TUN accepts: dropped, as the kernel would


def run(table_path: str, local_ip: str, port: str = str(UDP_PORT), tun_name: str = TUN_DEV) -> int:
    _name_process("flanneld")
    fwd = Forwarder(table_path, local_ip, int(port), tun_name)
    signal.signal(signal.SIGHUP, fwd.on_hup)
    fwd.reload()
    fwd.open()
    print(f"flanneld: {tun_name} <-> udp {local_ip}:{port} (pid {os.getpid()})", flush=True)
    for target in (fwd.tun_to_udp, fwd.udp_to_tun):
        threading.Thread(target=_fatal(target), name=target.__name__, daemon=True).start()
    fwd.watch()
    return 0


def _fatal(fn):
    """A data path that fails ends the process: the agent restarts flanneld."""
    def wrapped():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            print(f"flanneld: {fn.__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    return wrapped


def _name_process(name: str) -> None:
    """`ps -C flanneld`, pgrep and top name it (the command line stays the agent's: a fork)."""
    import ctypes
    PR_SET_NAME = 15
    ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode(), 0, 0, 0)
