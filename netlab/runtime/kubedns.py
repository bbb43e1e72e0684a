"""kube-dns for a lab: an authoritative-only DNS server for the cluster zone.

It answers UDP and TCP from a records file written by netlab.model.dns.build_records
(the lab agent rewrites it with write_records whenever services or pods change; the
server notices the new file on the next query, no signal needed). Outside names are
mostly dnsmasq's business (it sits in front on port 53, the way the kube-dns pod pairs
kubedns:10053 with dnsmasq:53, and forwards them upstream). Given nameservers
(--resolv-conf: in the pod, its resolver), kubedns does what kube-dns's skydns does with
them: it forwards the queries that reach it for names outside its zones (dnsmasq sends it
every in-addr.arpa name) and resolves the target of an ExternalName Service's CNAME when
that lies outside the zone, so the client gets the CNAME and the addresses in one answer.
Without nameservers, names outside its zones get REFUSED.

    python -m netlab.runtime.kubedns --listen 0.0.0.0 --port 10053 \\
        --records /run/netlab/<lab>/dns.json --health-port 8081

Port 0 picks a free port; the chosen ports are printed on the "kubedns ready" line.
GET /healthz (or kube-dns's /readiness) on the health port is 200 when a self-query of
the zone's SOA succeeds, 503 otherwise. SIGTERM or SIGINT exits 0.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Sequence

from dnslib import (A, AAAA, CNAME, EDNS0, NS, OPCODE, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, DNSError, DNSHeader,
                    DNSQuestion, DNSRecord)
from dnslib.server import DNSHandler, DNSLogger, DNSServer

REVERSE_APEX = "in-addr.arpa"
UDP_LIMIT = 512            # the classic limit for clients without EDNS0
MAX_MESSAGE = 65535        # what a 16-bit length (TCP) or an EDNS0 payload size can say
TCP_READ_TIMEOUT = 5.0     # a TCP client that sends nothing must not pin a thread forever
SELF_QUERY_TIMEOUT = 1.0
UPSTREAM_TIMEOUT = 2.0     # a CNAME target's lookup; dnsmasq in front waits longer than this
MAX_CNAME_CHAIN = 8        # skydns's "CNAME lookup limit of 8"

Upstream = Callable[[str, int], list]   # (name, qtype) -> answer RRs
POLL_INTERVAL = 0.1        # how soon a listener notices shutdown (socketserver's default is 0.5s)


def log(msg: str) -> None:
    print(f"kubedns: {msg}", file=sys.stderr, flush=True)


def write_records(path: str, records: dict) -> None:
    """Replace the records file atomically: a reader sees the old file or the new, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".dns-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(records, sort_keys=True, separators=(",", ":")))   # C encoder
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class Zone:
    """One loaded records file: resource records by name, and the names that exist."""

    def __init__(self, records: dict):
        self.zone = str(records["zone"]).lower().strip(".")
        self.ttl = int(records.get("ttl", 30))
        self.serial = int(records.get("serial", 0)) & 0xFFFFFFFF
        self.nets = [ipaddress.ip_network(c) for c in records.get("reverse", [])]
        self.namespaces = set(records.get("namespaces", []))
        # Pod records: "insecure" synthesises them from the name; "verified" lists them in "A"
        # (also what a file from before this key means); "disabled" has none.
        self.pods = records.get("pods", "verified")
        self.rrs: dict[str, list[tuple[int, object]]] = {}
        for name, ips in records.get("A", {}).items():
            self._add(name, QTYPE.A, [A(ip) for ip in ips])
        for name, srvs in records.get("SRV", {}).items():
            self._add(name, QTYPE.SRV, [SRV(s["priority"], s["weight"], s["port"], s["target"] + ".")
                                        for s in srvs])
        for name, targets in records.get("PTR", {}).items():
            self._add(name, QTYPE.PTR, [PTR(t + ".") for t in targets])
        for name, texts in records.get("TXT", {}).items():
            self._add(name, QTYPE.TXT, [TXT(t) for t in texts])
        for name, target in records.get("CNAME", {}).items():
            self._add(name, QTYPE.CNAME, [CNAME(target.rstrip(".") + ".")])
        # A name exists if it owns records or has descendants that do (empty
        # non-terminals such as default.svc.cluster.local answer NODATA, not NXDOMAIN).
        self.names = {self.zone}
        kinds = ("svc",) if self.pods == "disabled" else ("svc", "pod")
        owners = list(self.rrs) + [f"{ns}.{kind}.{self.zone}" for ns in self.namespaces for kind in kinds]
        for name in owners:
            apex = self.apex(name) or self.zone
            while name != apex and name not in self.names and "." in name:
                self.names.add(name)
                name = name.split(".", 1)[1]

    def _add(self, name: str, qtype: int, rdatas: list) -> None:
        self.rrs.setdefault(name.lower().strip("."), []).extend((qtype, r) for r in rdatas)

    def pod_address(self, name: str) -> Optional[ipaddress._BaseAddress]:
        """The address an insecure-mode pod name spells, as kube-dns and CoreDNS read it:
        `1-2-3-4.<ns>.pod.<zone>` is 1.2.3.4 (three dashes, none doubled), any other dashed
        label an IPv6 address; the namespace must exist (CoreDNS's check). None otherwise."""
        suffix = f".pod.{self.zone}"
        if self.pods != "insecure" or not name.endswith(suffix):
            return None
        labels = name[:-len(suffix)].split(".")
        if len(labels) != 2 or labels[1] not in self.namespaces:
            return None
        host = labels[0]
        text = host.replace("-", ".") if host.count("-") == 3 and "--" not in host else host.replace("-", ":")
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None

    def apex(self, name: str) -> Optional[str]:
        """The zone apex this server answers `name` under, or None (not ours: REFUSED)."""
        if name == self.zone or name.endswith("." + self.zone):
            return self.zone
        if not name.endswith("." + REVERSE_APEX):
            return None
        labels = name[:-len(REVERSE_APEX) - 1].split(".")
        if not 1 <= len(labels) <= 4:
            return None
        octets = list(reversed(labels)) + ["0"] * (4 - len(labels))
        try:
            net = ipaddress.ip_network(f"{'.'.join(octets)}/{8 * len(labels)}", strict=False)
        except ValueError:
            return None
        # Authoritative only for reverse names inside the cluster and service CIDRs.
        return REVERSE_APEX if any(net.subnet_of(n) for n in self.nets) else None

    def soa(self, apex: str) -> RR:
        return RR(apex + ".", QTYPE.SOA, ttl=self.ttl, rdata=SOA(
            f"ns.dns.{self.zone}.", f"hostmaster.{self.zone}.",
            (self.serial, 7200, 1800, 86400, self.ttl)))

    def answer(self, request: DNSRecord, upstream: Optional[Upstream] = None) -> DNSRecord:
        """The reply to one query. `upstream(name, qtype)` resolves the target of a CNAME
        outside the zone (an ExternalName Service's), as kube-dns's skydns and CoreDNS do, so the
        client gets the whole chain from one query; without it the CNAME comes alone."""
        reply = request.reply(ra=0, aa=1)
        if request.header.opcode != OPCODE.QUERY or len(request.questions) != 1:
            reply.header.aa = 0
            reply.header.rcode = RCODE.NOTIMP if request.header.opcode != OPCODE.QUERY else RCODE.FORMERR
            return reply
        q = request.q
        name = str(q.qname).lower().rstrip(".")
        apex = self.apex(name)
        if apex is None:
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply
        rrs = self.rrs.get(name, [])
        pod = self.pod_address(name)
        if pod is not None:
            rrs = [(QTYPE.A, A(str(pod))) if pod.version == 4 else (QTYPE.AAAA, AAAA(str(pod)))]
        elif name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self.soa(apex))
            return reply
        matches = [(t, r) for t, r in rrs if q.qtype in (t, QTYPE.ANY)]
        if name == self.zone and q.qtype in (QTYPE.SOA, QTYPE.ANY):
            reply.add_answer(self.soa(apex))
        if name == self.zone and q.qtype in (QTYPE.NS, QTYPE.ANY):
            matches.append((QTYPE.NS, NS(f"ns.dns.{self.zone}.")))
        for qtype, rdata in matches:
            reply.add_answer(RR(q.qname, qtype, ttl=self.ttl, rdata=rdata))
        alias = next((r for t, r in rrs if t == QTYPE.CNAME), None)
        if alias is not None and q.qtype not in (QTYPE.CNAME, QTYPE.ANY):
            reply.add_answer(RR(q.qname, QTYPE.CNAME, ttl=self.ttl, rdata=alias))
            self._chase(reply, str(alias.label).rstrip(".").lower(), q.qtype, upstream, {name})
        if not reply.rr:
            reply.add_auth(self.soa(apex))   # NODATA: the name exists, not with this type
        # Glue: the addresses of SRV targets and of the name server.
        for qtype, rdata in matches:
            if qtype in (QTYPE.SRV, QTYPE.NS):
                target = str(rdata.target if qtype == QTYPE.SRV else rdata.label).rstrip(".")
                for t, r in self.rrs.get(target, []):
                    if t == QTYPE.A:
                        reply.add_ar(RR(target + ".", QTYPE.A, ttl=self.ttl, rdata=r))
        return reply


    def _chase(self, reply: DNSRecord, target: str, qtype: int, upstream: Optional[Upstream],
               seen: set[str]) -> None:
        """Follow a CNAME: through this zone's own records, then out to `upstream`; at most
        MAX_CNAME_CHAIN links and never in a loop (skydns's limits)."""
        for _ in range(MAX_CNAME_CHAIN):
            if target in seen:
                log(f"CNAME loop at {target}")
                return
            seen.add(target)
            if self.apex(target) is None:
                if upstream is not None:
                    for rr in upstream(target, qtype):
                        reply.add_answer(rr)
                return
            rrs = self.rrs.get(target, [])
            for t, rdata in rrs:
                if t == qtype:
                    reply.add_answer(RR(target + ".", t, ttl=self.ttl, rdata=rdata))
            alias = next((r for t, r in rrs if t == QTYPE.CNAME), None)
            if alias is None:
                return
            reply.add_answer(RR(target + ".", QTYPE.CNAME, ttl=self.ttl, rdata=alias))
            target = str(alias.label).rstrip(".").lower()


class RecordsFile:
    """The records file, reloaded when it changes (a rename gives it a new inode)."""

    def __init__(self, path: str):
        self.path = path
        self.zone: Optional[Zone] = None
        self._seen: Optional[tuple] = None
        self._lock = threading.Lock()

    def current(self) -> Optional[Zone]:
        try:
            st = os.stat(self.path)
        except OSError:
            return self.zone           # gone for now: keep serving what we had
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig != self._seen:
            with self._lock:
                if sig != self._seen:
                    self._seen = sig
                    self._load()
        return self.zone

    def _load(self) -> None:
        try:
            with open(self.path) as f:
                zone = Zone(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log(f"keeping the previous records: cannot load {self.path}: {exc}")
            return
        self.zone = zone
        log(f"loaded {len(zone.rrs)} names for {zone.zone} (serial {zone.serial}) from {self.path}")


class Resolver:
    def __init__(self, records: RecordsFile, nameservers: Sequence[str] = ()):
        self.records = records
        self.nameservers = list(nameservers)   # for CNAME targets outside the zone

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        zone = self.records.current()
        if zone is None:
            reply = request.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.SERVFAIL   # not synced yet, like kube-dns before its first list
            return reply
        name = str(request.q.qname).lower().rstrip(".")
        if self.nameservers and len(request.questions) == 1 and zone.apex(name) is None:
            # Not ours (dnsmasq sends every in-addr.arpa name here): skydns's ServeDNSForward.
            return self.forward(request)
        return zone.answer(request, self.upstream if self.nameservers else None)

    def forward(self, request: DNSRecord) -> DNSRecord:
        """The nameservers' reply to the query, under its own id; SERVFAIL if none answers."""
        for server in self.nameservers:
            ns, _, port = server.partition("#")
            try:
                reply = DNSRecord.parse(request.send(ns, int(port or 53), timeout=UPSTREAM_TIMEOUT))
                if reply.header.tc:
                    reply = DNSRecord.parse(request.send(ns, int(port or 53), tcp=True, timeout=UPSTREAM_TIMEOUT))
            except (OSError, DNSError) as exc:
                log(f"forwarding {request.q.qname} to {server}: {exc}")
                continue
            reply.ar = [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]   # ours is added on the way out
            reply.header.id = request.header.id
            return reply
        reply = request.reply(ra=0, aa=0)
        reply.header.rcode = RCODE.SERVFAIL
        return reply

    def upstream(self, name: str, qtype: int) -> list[RR]:
        """The answer records the nameservers give for (name, qtype); [] if none answers."""
        for server in self.nameservers:
            ns, _, port = server.partition("#")          # "addr" or dnsmasq's "addr#port"
            query = DNSRecord(q=DNSQuestion(name, qtype))
            try:
                reply = DNSRecord.parse(query.send(ns, int(port or 53), timeout=UPSTREAM_TIMEOUT))
                if reply.header.tc:
                    reply = DNSRecord.parse(query.send(ns, int(port or 53), tcp=True, timeout=UPSTREAM_TIMEOUT))
            except (OSError, DNSError) as exc:
                log(f"upstream {ns} for {name}: {exc}")
                continue
            return list(reply.rr)
        return []


def nameservers_of(resolv_conf: str) -> list[str]:
    """The `nameserver` addresses of a resolv.conf (none if it cannot be read)."""
    try:
        with open(resolv_conf) as f:
            return [line.split()[1] for line in f if line.startswith("nameserver") and len(line.split()) > 1]
    except OSError:
        return []


class Handler(DNSHandler):
    """dnslib's handler with answers fitted to UDP, several queries per TCP connection, and
    TCP timeouts."""

    def setup(self) -> None:
        if self.server.socket_type == socket.SOCK_STREAM:
            self.request.settimeout(TCP_READ_TIMEOUT)

    def handle(self) -> None:
        try:
            if self.server.socket_type == socket.SOCK_STREAM:
                self._handle_tcp()
            else:
                super().handle()
        except OSError:
            pass   # the client went away or stalled; nothing to answer

    def _handle_tcp(self) -> None:
        """RFC 7766: a TCP client (dnsmasq, glibc) may send several queries on one connection;
        answer each until it closes (or stalls past TCP_READ_TIMEOUT)."""
        self.protocol = "tcp"
        while True:
            head = _recv_exactly(self.request, 2)
            if head is None:
                return
            data = _recv_exactly(self.request, int.from_bytes(head, "big"))
            if data is None:
                return
            try:
                rdata = self.get_reply(data)
            except DNSError as exc:
                self.server.logger.log_error(self, exc)
                return
            self.request.sendall(len(rdata).to_bytes(2, "big") + rdata)

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        try:
            reply = self.server.resolver.resolve(request, self)
        except Exception as exc:   # a bad record must cost one answer, not the server
            log(f"error answering {request.q.qname}: {exc!r}")
            reply = request.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.SERVFAIL
        # reply() copies the query's flags. AD says "validated with DNSSEC", which this server
        # never does (RFC 4035 3.2.3; dig sets AD in every query); Z must be zero. CD stays.
        reply.header.ad = 0
        reply.header.z = 0
        opt = next((r for r in request.ar if r.rtype == QTYPE.OPT), None)
        size = udp_size(opt)
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=size))
        if self.protocol == "udp":
            return fit_udp(reply, size)
        return reply.pack()


def udp_size(opt: Optional[RR]) -> int:
    """The largest UDP answer the client takes: 512 without EDNS0, else the payload size its
    OPT record advertises (never less than 512, RFC 6891 6.2.5), as CoreDNS and kube-dns's
    skydns honour it."""
    if opt is None:
        return UDP_LIMIT
    return max(UDP_LIMIT, min(int(opt.rclass), MAX_MESSAGE))


def fit_udp(reply: DNSRecord, limit: int) -> bytes:
    """The reply packed to at most `limit` bytes, the way RFC 2181 section 9 asks.

    - It fits: sent whole.
    - Only the additional section (SRV glue) does not fit: that is dropped and TC stays clear
      ("TC should not be set merely because some extra information could have been
      included").
    - The answer does not fit: TC is set, the header, the question and the OPT record are
      kept, and only whole RRsets that fit stay (a single RRset that does not fit leaves the
      answer section empty, so no cache ever holds half of it). The client retries over TCP.

    dnslib's own truncate() drops the question too: dnsmasq then discards the reply as not
    matching its query, and the client hears nothing at all.
    """
    packed = reply.pack()
    if len(packed) <= limit:
        return packed
    opts = [r for r in reply.ar if r.rtype == QTYPE.OPT]
    trimmed = DNSRecord(DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap),
                        questions=list(reply.questions), rr=list(reply.rr), auth=list(reply.auth), ar=opts)
    packed = trimmed.pack()
    if len(packed) <= limit:
        return packed
    trimmed.header.tc = 1
    trimmed.rr, trimmed.auth = [], []
    packed = trimmed.pack()
    for rrset in _rrsets(reply.rr):
        trimmed.rr.extend(rrset)
        attempt = trimmed.pack()
        if len(attempt) > limit:
            del trimmed.rr[-len(rrset):]
            break
        packed = attempt
    return packed


def _rrsets(rrs: list) -> list[list]:
    """Resource records grouped into RRsets (owner, type), in their order."""
    sets: dict[tuple, list] = {}
    for rr in rrs:
        sets.setdefault((str(rr.rname).lower(), rr.rtype), []).append(rr)
    return list(sets.values())


def _recv_exactly(sock: socket.socket, n: int) -> Optional[bytes]:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def self_query(host: str, port: int, zone: str) -> Optional[str]:
    """None if the server answers the zone's SOA, else why not."""
    try:
        data = DNSRecord.question(zone, "SOA").send(host, port, timeout=SELF_QUERY_TIMEOUT)
        reply = DNSRecord.parse(data)
    except (OSError, ValueError) as exc:
        return f"no answer from {host}:{port}: {exc}"
    if reply.header.rcode != RCODE.NOERROR or not reply.rr:
        return f"{zone} SOA: {RCODE.get(reply.header.rcode)}"
    return None


class Server:
    """The DNS listeners (UDP and TCP on one port) and the optional health endpoint."""

    def __init__(self, listen: str, port: int, records_path: str, health_port: Optional[int] = None,
                 health_listen: Optional[str] = None, also_check: Optional[tuple[str, int]] = None,
                 nameservers: Sequence[str] = ()):
        # exechealthz in the kube-dns pod checked both containers: also_check is the cache.
        self.also_check = also_check
        self.records = RecordsFile(records_path)
        self.records.current()
        resolver = Resolver(self.records, nameservers)
        logger = DNSLogger(log="error", prefix=False, logf=log)
        self.dns = self._bind_pair(resolver, logger, listen, port)
        self.listen = listen
        self.port = self.dns[0].server.server_address[1]
        self.health: Optional[ThreadingHTTPServer] = None
        if health_port is not None:
            try:
                # kubelet probes from the node, so the health port may need a wider address.
                self.health = ThreadingHTTPServer((health_listen or listen, health_port), _health_handler(self))
            except OSError:
                for s in self.dns:
                    s.server.server_close()
                raise
            self.health.daemon_threads = True
        self.health_port = self.health.server_address[1] if self.health else None

    @staticmethod
    def _bind_pair(resolver, logger, listen: str, port: int) -> list[DNSServer]:
        # With port 0 the kernel picks the UDP port; TCP must then get the same one.
        for _ in range(10 if port == 0 else 1):
            udp = DNSServer(resolver, address=listen, port=port, logger=logger, handler=Handler)
            chosen = udp.server.server_address[1]
            try:
                tcp = DNSServer(resolver, address=listen, port=chosen, tcp=True, logger=logger,
                                handler=Handler)
            except OSError:
                udp.server.server_close()
                if port:
                    raise
                continue
            return [udp, tcp]
        raise OSError(f"no port free for both UDP and TCP on {listen}")

    def probe_address(self) -> str:
        return "127.0.0.1" if self.listen in ("0.0.0.0", "") else self.listen

    def healthy(self) -> Optional[str]:
        zone = self.records.current()
        if zone is None:
            return f"no records loaded from {self.records.path}"
        problem = self_query(self.probe_address(), self.port, zone.zone)
        if problem is None and self.also_check:
            problem = self_query(self.also_check[0], self.also_check[1], zone.zone)
            if problem:
                problem = f"dnsmasq at {self.also_check[0]}:{self.also_check[1]}: {problem}"
        return problem

    def start(self) -> None:
        servers = [s.server for s in self.dns] + ([self.health] if self.health else [])
        for s in servers:
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                             daemon=True).start()

    def close(self) -> None:
        servers = [s.server for s in self.dns] + ([self.health] if self.health else [])
        stoppers = [threading.Thread(target=s.shutdown, daemon=True) for s in servers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=2.0)
        for s in servers:
            s.server_close()


def _health_handler(server: Server) -> type:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in ("/healthz", "/readiness"):
                self._send(404, "not found\n")
                return
            problem = server.healthy()
            self._send(503 if problem else 200, (problem or "ok") + "\n")

        def _send(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass   # probes every few seconds would drown the log

    return Health


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="kubedns", description="Authoritative DNS for a netlab cluster zone.")
    p.add_argument("--listen", default="0.0.0.0", help="address to serve on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=10053, help="UDP and TCP port (default 10053; 0 = any)")
    p.add_argument("--records", required=True, help="records JSON written by write_records")
    p.add_argument("--health-port", type=int, default=8081, help="HTTP /healthz port (default 8081; 0 = any)")
    p.add_argument("--health-listen", default=None, help="address of the health port (default: --listen)")
    p.add_argument("--check-cache", default=None, metavar="ADDR:PORT",
                   help="the health check also asks this DNS cache (dnsmasq) for the zone")
    p.add_argument("--resolv-conf", default=None, metavar="PATH",
                   help="resolve CNAME targets outside the zone (ExternalName) with this file's "
                        "nameservers, as skydns does with the pod's /etc/resolv.conf (default: never)")
    args = p.parse_args(argv)

    # Block the stop signals before any thread starts (threads inherit the mask), then
    # wait for one in the main thread: exit is immediate, no polling.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        try:
            cache = None
            if args.check_cache:
                host, _, cache_port = args.check_cache.rpartition(":")
                cache = (host, int(cache_port))
            nameservers = nameservers_of(args.resolv_conf) if args.resolv_conf else []
            server = Server(args.listen, args.port, args.records, args.health_port, args.health_listen, cache,
                            nameservers)
        except OSError as exc:
            log(f"cannot listen on {args.listen} (dns port {args.port}, health port {args.health_port}): "
                f"{exc.strerror or exc}")
            return 1
        server.start()
        print(f"kubedns ready dns={server.listen}:{server.port} health={server.listen}:{server.health_port}",
              flush=True)
        signal.sigwait(stop_signals)
        server.close()
        return 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

if __name__ == "__main__":
    sys.exit(main())
