"""Cluster DNS records, resolv.conf, service env vars, the kubedns server and dnsmasq in front.

No root: servers listen on 127.0.0.1 ephemeral ports, and every process started here is
stopped in a finalizer.
"""
from __future__ import annotations

import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest
from dnslib import A, EDNS0, QTYPE, RCODE, RR, TXT, DNSRecord

from netlab.model import internet
from netlab.model.config import parse_lab
from netlab.model.dns import build_records, hosts_file, resolv_conf
from netlab.model.envvars import container_env, env_name, expand, service_env
from netlab.model.errors import InvalidError
from netlab.model.loader import load_lab
from netlab.model.objects import Meta, Service, ServicePort
from netlab.runtime.dnsmasq import dnsmasq_argv, dnsmasq_missing, find_dnsmasq, internet_dns_argv
from netlab.runtime.kubedns import Server, Zone, fit_udp, nameservers_of, write_records
from netlab.runtime.kubedns import main as kubedns_main

REPO = Path(__file__).resolve().parents[2]
ZONE = "cluster.local"

EXTRA = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec:
  ports: [{name: https, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {name: pg, port: 5432, targetPort: pgport}
  - {name: metrics, port: 9187}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP}
""" + "".join(f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: db}}}}
spec:
  {host}
  containers:
  - name: pg
    ports: [{{name: pgport, containerPort: 5433}}, {{containerPort: 9187}}]
""" for name, host in (("db-0", "hostname: db-0\n  subdomain: db"),
                       ("db-1", "hostname: db-1\n  subdomain: db"),
                       ("db-x", "hostname: db-x\n  subdomain: other"))) + """
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  dnsPolicy: Default
  containers:
  - name: web
    ports: [{containerPort: 8080}]
    env:
    - {name: WEB_SERVICE_HOST, value: overridden}
    - {name: URL, value: "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)/$(NOPE)$$x"}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    lab = tmp_path_factory.mktemp("lab")
    for f in (REPO / "labs" / "guestbook").iterdir():
        shutil.copy(f, lab / f.name)
    (lab / "extra.yaml").write_text(EXTRA)
    return load_lab(lab, seed=1)


def ip_of(cluster, key: str) -> str:
    return cluster.pods[key].pod_ip


def rev(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


# ------------------------------------------------------------------ records (pure)


def test_clusterip_services_have_a_srv_and_ptr(cluster):
    r = build_records(cluster)
    assert r["zone"] == ZONE and r["dns_ip"] == "10.96.0.10"
    for key in ("default/redis-master", "default/frontend", "shop/web"):
        svc = cluster.services[key]
        fqdn = f"{svc.meta.name}.{svc.meta.namespace}.svc.{ZONE}"
        assert r["A"][fqdn] == [svc.cluster_ip]
        assert r["PTR"][rev(svc.cluster_ip)] == [fqdn]
    web = f"web.shop.svc.{ZONE}"
    assert r["SRV"][f"_http._tcp.{web}"] == [{"priority": 0, "weight": 100, "port": 80, "target": web}]
    assert r["SRV"][f"_dns._udp.{web}"] == [{"priority": 0, "weight": 100, "port": 53, "target": web}]
    # Unnamed ports (all of the guestbook's) have no SRV record.
    assert not [n for n in r["SRV"] if n.split(".")[2] in ("frontend", "redis-master", "redis-slave")]
    assert f"_https._tcp.kubernetes.default.svc.{ZONE}" in r["SRV"]
    assert r["TXT"][f"dns-version.{ZONE}"] == ["1.0.1"]


def test_headless_service_lists_ready_endpoints(cluster):
    r = build_records(cluster)
    ips = {k: ip_of(cluster, f"shop/{k}") for k in ("db-0", "db-1", "db-x")}
    db = f"db.shop.svc.{ZONE}"
    assert sorted(r["A"][db]) == sorted(ips.values())
    # hostname + subdomain naming the service gives the endpoint its hostname;
    # db-x's subdomain names another service, so it is known by its dashed IP.
    names = {"db-0": f"db-0.{db}", "db-1": f"db-1.{db}", "db-x": f"{ips['db-x'].replace('.', '-')}.{db}"}
    for pod, name in names.items():
        assert r["A"][name] == [ips[pod]]
        assert name in r["PTR"][rev(ips[pod])]
    srv = r["SRV"][f"_pg._tcp.{db}"]
    assert sorted(s["target"] for s in srv) == sorted(names.values())
    assert {(s["priority"], s["weight"], s["port"]) for s in srv} == {(0, 33, 5433)}   # endpoint port
    assert {s["port"] for s in r["SRV"][f"_metrics._tcp.{db}"]} == {9187}


def test_readiness_controls_headless_records(cluster, monkeypatch):
    monkeypatch.setattr(cluster.config, "dns_pods", "verified")
    ready = {k for k in cluster.pods if k != "shop/db-1"}
    r = build_records(cluster, ready=ready)
    db = f"db.shop.svc.{ZONE}"
    assert ip_of(cluster, "shop/db-1") not in r["A"][db]
    assert f"db-1.{db}" not in r["A"]
    assert len(r["SRV"][f"_pg._tcp.{db}"]) == 2 and r["SRV"][f"_pg._tcp.{db}"][0]["weight"] == 50
    # Pod records (verified mode: listed for the pods that exist) do not depend on readiness.
    assert f"{ip_of(cluster, 'shop/db-1').replace('.', '-')}.shop.pod.{ZONE}" in r["A"]
    none_ready = build_records(cluster, ready=set())
    assert db not in none_ready["A"] and f"_pg._tcp.{db}" not in none_ready["SRV"]
    assert none_ready["serial"] != r["serial"] and build_records(cluster, ready=ready) == r


def test_pod_records_follow_the_dns_pods_mode(cluster, monkeypatch):
    db0 = cluster.pods["shop/db-0"]
    name = f"{db0.pod_ip.replace('.', '-')}.shop.pod.{ZONE}"
    insecure = build_records(cluster)            # the default: the server synthesises them
    assert insecure["pods"] == "insecure" and not [n for n in insecure["A"] if ".pod." in n]
    monkeypatch.setattr(cluster.config, "dns_pods", "verified")
    verified = build_records(cluster)
    assert verified["pods"] == "verified" and verified["A"][name] == [db0.pod_ip]
    assert len([n for n in verified["A"] if ".pod." in n]) == len(cluster.pods)
    monkeypatch.setattr(cluster.config, "dns_pods", "disabled")
    assert build_records(cluster)["pods"] == "disabled"


def test_lab_yaml_dns_pods_setting():
    doc = {"apiVersion": "netlab/v1", "kind": "Lab", "spec": {"dnsPods": "verified"}}
    cfg = parse_lab(doc, default_name="x")
    assert cfg.dns_pods == "verified" and parse_lab(None, default_name="x").dns_pods == "insecure"
    assert parse_lab(cfg.to_dict(), default_name="x").dns_pods == "verified"     # state.json round trip
    with pytest.raises(InvalidError) as info:
        parse_lab({**doc, "spec": {"dnsPods": "secure"}}, default_name="x")
    assert "spec.dnsPods" in str(info.value) and "insecure, verified, disabled" in str(info.value)


def _pod_zone(mode: str) -> Zone:
    return Zone({"zone": ZONE, "namespaces": ["default", "shop"], "pods": mode,
                 "A": {f"10-244-1-5.shop.pod.{ZONE}": ["10.244.1.5"]} if mode == "verified" else {}})


def _ask_zone(zone: Zone, name: str, qtype: str = "A") -> DNSRecord:
    return zone.answer(DNSRecord.question(name, qtype))


def test_insecure_pod_records_answer_any_address_under_a_namespace_that_exists():
    # CoreDNS plugin/kubernetes handler_pod_insecure_test.go: 10-240-0-1.podns.pod... -> 10.240.0.1.
    zone = _pod_zone("insecure")
    for name, ip in ((f"10-244-1-5.shop.pod.{ZONE}", "10.244.1.5"),        # a pod that exists
                     (f"172-0-0-2.default.pod.{ZONE}", "172.0.0.2"),        # any address at all
                     (f"10-244-1-5.DEFAULT.pod.{ZONE}", "10.244.1.5")):     # another namespace, any case
        reply = _ask_zone(zone, name)
        assert reply.header.rcode == RCODE.NOERROR and answers(reply) == [ip]
    assert [str(rr.rdata) for rr in _ask_zone(zone, f"fd00--1.default.pod.{ZONE}", "AAAA").rr] == ["fd00::1"]
    nodata = _ask_zone(zone, f"10-244-1-5.shop.pod.{ZONE}", "AAAA")
    assert (nodata.header.rcode, len(nodata.rr), nodata.auth[0].rtype) == (RCODE.NOERROR, 0, QTYPE.SOA)
    for name in (f"blah.shop.pod.{ZONE}", f"10-244-1-5.nosuchns.pod.{ZONE}", f"10-244-1-256.shop.pod.{ZONE}",
                 f"010-244-1-5.shop.pod.{ZONE}", f"x.10-244-1-5.shop.pod.{ZONE}"):
        assert _ask_zone(zone, name).header.rcode == RCODE.NXDOMAIN, name


def test_verified_and_disabled_pod_records():
    verified = _pod_zone("verified")
    assert answers(_ask_zone(verified, f"10-244-1-5.shop.pod.{ZONE}")) == ["10.244.1.5"]
    assert _ask_zone(verified, f"10-244-1-5.default.pod.{ZONE}").header.rcode == RCODE.NXDOMAIN
    assert _ask_zone(verified, f"10-244-1-9.shop.pod.{ZONE}").header.rcode == RCODE.NXDOMAIN
    disabled = _pod_zone("disabled")
    for name in (f"10-244-1-5.shop.pod.{ZONE}", f"shop.pod.{ZONE}"):
        assert _ask_zone(disabled, name).header.rcode == RCODE.NXDOMAIN
    assert _ask_zone(disabled, f"shop.svc.{ZONE}").header.rcode == RCODE.NOERROR


def test_resolv_conf(cluster):
    frontend = next(p for p in cluster.pods.values() if p.meta.name.startswith("frontend-"))
    lines = [l for l in resolv_conf(cluster, frontend).splitlines() if not l.startswith("#")]
    assert lines == ["nameserver 10.96.0.10",
                     "search default.svc.cluster.local svc.cluster.local cluster.local",
                     "options ndots:5"]
    shop_db = cluster.pods["shop/db-0"]
    assert "search shop.svc.cluster.local svc.cluster.local cluster.local" in resolv_conf(cluster, shop_db)
    web = cluster.pods["shop/web-1"]
    assert "nameserver 203.0.113.53\n" in resolv_conf(cluster, web, "203.0.113.53")
    no_upstream = resolv_conf(cluster, web)
    assert "nameserver" not in no_upstream.replace("# no nameserver", "") and "# no nameserver" in no_upstream


def test_hosts_file_as_kubelet_writes_it(cluster):
    db0, dbx = cluster.pods["shop/db-0"], cluster.pods["shop/db-x"]
    frontend = next(p for p in cluster.pods.values() if p.meta.name.startswith("frontend-"))
    hosts = hosts_file(cluster, db0)
    # kubelet_pods.go managedHostsFileContent, line for line.
    assert hosts.splitlines() == [
        "# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters",
        f"{db0.pod_ip}\tdb-0.db.shop.svc.cluster.local\tdb-0"]
    # The subdomain need not name a service: the domain is written all the same.
    assert hosts_file(cluster, dbx).endswith(f"{dbx.pod_ip}\tdb-x.other.shop.svc.cluster.local\tdb-x\n")
    assert hosts_file(cluster, frontend).endswith(f"{frontend.pod_ip}\t{frontend.meta.name}\n")


# ------------------------------------------------------------------ env vars (pure)


def test_env_golden_documented_example():
    svc = Service(meta=Meta(name="redis-master"), ports=[ServicePort(port=6379)], cluster_ip="10.0.0.11")
    assert service_env([svc], "default") == [
        ("REDIS_MASTER_SERVICE_HOST", "10.0.0.11"),
        ("REDIS_MASTER_SERVICE_PORT", "6379"),
        ("REDIS_MASTER_PORT", "tcp://10.0.0.11:6379"),
        ("REDIS_MASTER_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
        ("REDIS_MASTER_PORT_6379_TCP_PROTO", "tcp"),
        ("REDIS_MASTER_PORT_6379_TCP_PORT", "6379"),
        ("REDIS_MASTER_PORT_6379_TCP_ADDR", "10.0.0.11"),
    ]


def test_env_named_ports_namespaces_and_headless(cluster):
    env = dict(service_env(cluster.services.values(), "shop"))
    web = cluster.services["shop/web"].cluster_ip
    assert env["WEB_SERVICE_PORT"] == "80" and env["WEB_SERVICE_PORT_HTTP"] == "80"
    assert env["WEB_SERVICE_PORT_DNS"] == "53"
    assert env["WEB_PORT"] == f"tcp://{web}:80"
    assert env["WEB_PORT_53_UDP"] == f"udp://{web}:53" and env["WEB_PORT_53_UDP_PROTO"] == "udp"
    assert not [k for k in env if k.startswith(("DB_", "REDIS_", "FRONTEND_"))]   # headless; other namespace
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"                          # the master service
    # Only services that existed when the pod started: the caller passes those.
    early = [s for k, s in cluster.services.items() if k != "default/frontend"]
    assert "FRONTEND_SERVICE_HOST" not in dict(service_env(early, "default"))
    assert env_name("my.svc-1") == "MY_SVC_1" and env_name("3d") == "_3D"


def test_container_env_own_entries_win_and_expand(cluster):
    pod = cluster.pods["shop/web-1"]
    env = container_env(cluster, pod, pod.spec.containers[0])
    names = [k for k, _ in env]
    assert len(names) == len(set(names))
    assert names[-2:] == ["WEB_SERVICE_HOST", "URL"]
    assert dict(env)["WEB_SERVICE_HOST"] == "overridden"
    assert dict(env)["URL"] == "http://overridden:80/$(NOPE)$x"
    assert expand("$(A)$$(A)$(A$", {"A": "1"}) == "1$(A)$(A$"


# ------------------------------------------------------------------ the server


def ask(port: int, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 2.0) -> DNSRecord:
    data = DNSRecord.question(name, qtype).send("127.0.0.1", port, tcp=tcp, timeout=timeout)
    return DNSRecord.parse(data)


def answers(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


@pytest.fixture
def records_file(cluster, tmp_path):
    path = tmp_path / "dns.json"
    write_records(str(path), build_records(cluster))
    return path


@pytest.fixture
def kubedns(records_file):
    server = Server("127.0.0.1", 0, str(records_file), health_port=0)
    server.start()
    yield server
    server.close()


def test_server_answers_records(cluster, kubedns):
    port = kubedns.port
    master = cluster.services["default/redis-master"].cluster_ip
    reply = ask(port, f"redis-master.default.svc.{ZONE}")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa and answers(reply) == [master]
    assert answers(ask(port, f"REDIS-Master.default.svc.{ZONE}")) == [master]   # case-insensitive
    assert answers(ask(port, f"redis-master.default.svc.{ZONE}", tcp=True)) == [master]

    srv = ask(port, f"_pg._tcp.db.shop.svc.{ZONE}", "SRV")
    assert len(srv.rr) == 3 and {rr.rdata.port for rr in srv.rr} == {5433}
    assert {str(rr.rname) for rr in srv.ar} == {str(rr.rdata.target) for rr in srv.rr}   # glue

    db = ask(port, f"db.shop.svc.{ZONE}")
    assert answers(db) == sorted(ip_of(cluster, f"shop/{p}") for p in ("db-0", "db-1", "db-x"))
    assert answers(ask(port, f"db-0.db.shop.svc.{ZONE}")) == [ip_of(cluster, "shop/db-0")]

    assert answers(ask(port, rev(master), "PTR")) == [f"redis-master.default.svc.{ZONE}."]
    assert answers(ask(port, rev(ip_of(cluster, "shop/db-0")), "PTR")) == [f"db-0.db.shop.svc.{ZONE}."]
    assert answers(ask(port, f"dns-version.{ZONE}", "TXT")) == ['"1.0.1"']
    assert ask(port, ZONE, "SOA").rr[0].rtype == QTYPE.SOA


def test_server_negative_answers(cluster, kubedns):
    port = kubedns.port
    nx = ask(port, f"nosuch.default.svc.{ZONE}")
    assert nx.header.rcode == RCODE.NXDOMAIN and nx.auth[0].rtype == QTYPE.SOA
    # Search-path expansions of outside names must be NXDOMAIN so resolvers move on.
    assert ask(port, f"www.example.com.default.svc.{ZONE}").header.rcode == RCODE.NXDOMAIN
    assert ask(port, "99.0.96.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    # Names that exist answer NODATA for other types, and empty non-terminals exist.
    for name, qtype in ((f"redis-master.default.svc.{ZONE}", "AAAA"), (f"default.svc.{ZONE}", "A"),
                        (f"kube-system.svc.{ZONE}", "A")):
        reply = ask(port, name, qtype)
        assert (reply.header.rcode, len(reply.rr), reply.auth[0].rtype) == (RCODE.NOERROR, 0, QTYPE.SOA)
    # Never forwards: outside names and outside reverse names are refused.
    for name, qtype in (("www.example.com", "A"), ("8.8.8.8.in-addr.arpa", "PTR"), ("10.in-addr.arpa", "PTR")):
        reply = ask(port, name, qtype)
        assert reply.header.rcode == RCODE.REFUSED and not reply.rr


def test_server_reloads_when_records_change(cluster, kubedns, records_file):
    port = kubedns.port
    name = f"redis-master.default.svc.{ZONE}"
    assert answers(ask(port, name))
    records = build_records(cluster)
    records["A"][name] = ["10.96.0.99"]
    records["A"][f"new.default.svc.{ZONE}"] = ["10.96.0.98"]
    write_records(str(records_file), records)
    assert answers(ask(port, name)) == ["10.96.0.99"]
    assert answers(ask(port, f"new.default.svc.{ZONE}")) == ["10.96.0.98"]
    # A broken file is reported and ignored: the last good records keep answering.
    records_file.write_text("{not json")
    assert answers(ask(port, name)) == ["10.96.0.99"]


def _big_zone(tmp_path, count: int) -> Server:
    """A headless service `big` with `count` endpoints, each with its own name and SRV target."""
    ips = [f"10.244.1.{i}" for i in range(2, 2 + count)]
    fqdn = f"big.default.svc.{ZONE}"
    names = {ip: f"{ip.replace('.', '-')}.{fqdn}" for ip in ips}
    path = tmp_path / "dns.json"
    write_records(str(path), {
        "zone": ZONE, "reverse": ["10.244.0.0/16"],
        "A": {fqdn: ips, **{name: [ip] for ip, name in names.items()}},
        "SRV": {f"_http._tcp.{fqdn}": [{"priority": 0, "weight": 100 // count, "port": 8080, "target": n}
                                       for n in names.values()]}})
    server = Server("127.0.0.1", 0, str(path))
    server.start()
    return server


def _udp(port: int, name: str, qtype: str = "A", bufsize: Optional[int] = None) -> tuple[DNSRecord, int]:
    """A UDP query (with EDNS0 advertising `bufsize`, or without EDNS0): (reply, its size)."""
    query = DNSRecord.question(name, qtype)
    if bufsize is not None:
        query.add_ar(EDNS0(udp_len=bufsize))
    data = query.send("127.0.0.1", port, timeout=2)
    return DNSRecord.parse(data), len(data)


def test_big_answers_truncate_with_the_question_kept_and_complete_over_tcp(tmp_path):
    server = _big_zone(tmp_path, 40)
    name = f"big.default.svc.{ZONE}"
    try:
        # 40 A records (about 700 bytes) do not fit 512 bytes: TC, the question kept (dnslib's
        # own truncate() dropped it, and dnsmasq then discarded the reply), no half RRset.
        udp, size = _udp(server.port, name)
        assert udp.header.tc and not udp.rr and size <= 512
        assert [str(q.qname) for q in udp.questions] == [name + "."]
        assert udp.header.id and udp.header.rcode == RCODE.NOERROR
        tcp = ask(server.port, name, tcp=True)
        assert not tcp.header.tc and len(tcp.rr) == 40
        # The client's EDNS0 size is honoured: 1232 holds them; 512 (the floor) does not.
        edns, size = _udp(server.port, name, bufsize=1232)
        assert not edns.header.tc and len(edns.rr) == 40 and size > 512
        assert next(r for r in edns.ar if r.rtype == QTYPE.OPT).rclass == 1232
        small, size = _udp(server.port, name, bufsize=300)
        assert small.header.tc and size <= 512
        assert any(r.rtype == QTYPE.OPT for r in small.ar)        # the OPT record stays
        # Bigger than 1232 when the client says it takes it: 40 SRV + 40 glue is about 3.6 kB.
        srv, size = _udp(server.port, f"_http._tcp.{name}", "SRV", bufsize=4096)
        assert not srv.header.tc and len(srv.rr) == 40 and len(srv.ar) == 41 and size > 1232
    finally:
        server.close()


def test_glue_that_does_not_fit_is_dropped_without_tc(tmp_path):
    # RFC 2181 9: TC is not set merely because extra information did not fit.
    server = _big_zone(tmp_path, 6)
    try:
        whole = ask(server.port, f"_http._tcp.big.default.svc.{ZONE}", "SRV", tcp=True)
        assert len(whole.rr) == 6 and len(whole.ar) == 6 and len(whole.pack()) > 512
        srv, size = _udp(server.port, f"_http._tcp.big.default.svc.{ZONE}", "SRV")
        assert not srv.header.tc and len(srv.rr) == 6 and not srv.ar and size <= 512
    finally:
        server.close()


def test_tcp_connection_answers_several_queries(tmp_path):
    # RFC 7766 6.2.1: dnsmasq and glibc send more than one query on a connection.
    server = _big_zone(tmp_path, 40)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
            for qtype, count in (("A", 40), ("AAAA", 0), ("A", 40)):
                packet = DNSRecord.question(f"big.default.svc.{ZONE}", qtype).pack()
                conn.sendall(len(packet).to_bytes(2, "big") + packet)
                length = int.from_bytes(_recv(conn, 2), "big")
                assert len(DNSRecord.parse(_recv(conn, length)).rr) == count
    finally:
        server.close()


def _recv(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def test_fit_udp_keeps_whole_rrsets():
    query = DNSRecord.question(f"x.{ZONE}", "ANY")
    reply = query.reply()
    for i in range(20):
        reply.add_answer(RR(f"x.{ZONE}", QTYPE.A, rdata=A(f"10.0.0.{i}")))
    for i in range(30):
        reply.add_answer(RR(f"x.{ZONE}", QTYPE.TXT, rdata=TXT("t" * 20)))
    out = DNSRecord.parse(fit_udp(reply, 512))
    assert out.header.tc and {rr.rtype for rr in out.rr} == {QTYPE.A} and len(out.rr) == 20


def test_ad_flag_is_not_echoed(kubedns):
    query = DNSRecord.question(f"redis-master.default.svc.{ZONE}")
    query.header.ad = 1               # dig sets AD in every query
    query.header.cd = 1
    reply = DNSRecord.parse(query.send("127.0.0.1", kubedns.port, timeout=2))
    assert reply.rr and not reply.header.ad and reply.header.cd


def test_zone_without_records_file_is_servfail_and_unhealthy(tmp_path):
    server = Server("127.0.0.1", 0, str(tmp_path / "missing.json"), health_port=0)
    server.start()
    try:
        assert ask(server.port, f"x.{ZONE}").header.rcode == RCODE.SERVFAIL
        assert "no records" in server.healthy()
    finally:
        server.close()


def test_zone_apex_and_reverse_authority():
    zone = Zone({"zone": "Cluster.Local.", "reverse": ["10.96.0.0/12"]})
    assert zone.apex("a.b.cluster.local") == "cluster.local"
    assert zone.apex("1.0.96.10.in-addr.arpa") == "in-addr.arpa"
    assert zone.apex("111.10.in-addr.arpa") == "in-addr.arpa"
    assert zone.apex("112.10.in-addr.arpa") is None
    assert zone.apex("x.10.in-addr.arpa") is None and zone.apex("example.com") is None


def _start(argv: list[str], request) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop():
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    request.addfinalizer(stop)
    return proc


def _read_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no ready line within %ss" % timeout
    return proc.stdout.readline()


def test_main_serves_health_and_exits_on_sigterm(records_file, request):
    proc = _start([sys.executable, "-m", "netlab.runtime.kubedns", "--listen", "127.0.0.1", "--port", "0",
                   "--records", str(records_file), "--health-port", "0"], request)
    line = _read_line(proc)
    fields = dict(f.split("=", 1) for f in line.split()[2:])
    port = int(fields["dns"].rsplit(":", 1)[1])
    health = fields["health"]
    assert ask(port, f"redis-master.default.svc.{ZONE}").rr
    with urllib.request.urlopen(f"http://{health}/healthz", timeout=3) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{health}/nope", timeout=3)
    assert err.value.code == 404
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0 and time.monotonic() - started < 2


def test_main_reports_a_busy_port(records_file, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        assert kubedns_main(["--listen", "127.0.0.1", "--port", str(port), "--records", str(records_file),
                             "--health-port", "0"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("kubedns: cannot listen on 127.0.0.1") and "Address already in use" in last


# ------------------------------------------------------------------ dnsmasq in front


def test_dnsmasq_argv():
    argv = dnsmasq_argv("10.244.1.5", pidfile="/run/x.pid", forward_to="203.0.113.53")
    assert argv[0].endswith("dnsmasq") and "--keep-in-foreground" in argv
    for arg in ("--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=10.244.1.5",
                "--port=53", "--cache-size=1000", "--no-negcache", "--log-facility=-",
                "--pid-file=/run/x.pid", "--server=/cluster.local/127.0.0.1#10053",
                "--server=/in-addr.arpa/127.0.0.1#10053", "--server=203.0.113.53"):
        assert arg in argv
    assert "--pid-file=" in dnsmasq_argv(["127.0.0.1", "10.244.1.5"])
    assert dnsmasq_missing() is None or "apt-get install" in dnsmasq_missing()


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq needs both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.mark.skipif(find_dnsmasq() is None, reason="dnsmasq is not installed")
def test_dnsmasq_caches_in_front_of_kubedns(cluster, kubedns, tmp_path, request):
    port = _free_port()
    proc = _start(dnsmasq_argv("127.0.0.1", kubedns.port, port=port), request)
    name = f"redis-master.default.svc.{ZONE}"
    master = cluster.services["default/redis-master"].cluster_ip
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            reply = ask(port, name, timeout=0.3)
            break
        except OSError:
            assert time.monotonic() < deadline, "dnsmasq did not answer within 10s"
            time.sleep(0.1)
    assert answers(reply) == [master]                                       # (a) through kubedns
    assert answers(ask(port, rev(master), "PTR")) == [f"{name}."]
    assert ask(port, "www.example.com").header.rcode == RCODE.REFUSED      # nowhere to forward

    kubedns.close()                                                        # kubedns goes away
    assert answers(ask(port, name)) == [master]                            # (b) from the cache
    try:
        uncached = ask(port, f"frontend.default.svc.{ZONE}", timeout=0.5)
        assert not uncached.rr
    except OSError:
        pass    # no answer at all is also proof that the cached one came from the cache


def test_dnsmasq_reads_its_pods_resolv_conf_when_told():
    argv = dnsmasq_argv("10.244.1.5", resolv_file="/etc/resolv.conf")
    assert "--resolv-file=/etc/resolv.conf" in argv and "--no-resolv" not in argv


# ------------------------------------------------------------------ the simulated internet's DNS


def test_internet_zone_follows_the_internet_cidr(cluster):
    assert internet.host_ip(cluster) == "203.0.113.10"
    assert internet.zone(cluster) == {
        "A": {"example.net": "203.0.113.10", "www.example.net": "203.0.113.10", "ns1.example.net": "203.0.113.10"},
        "CNAME": {"web.example.net": "www.example.net"}}
    other = parse_lab({"apiVersion": "netlab/v1", "kind": "Lab",
                       "spec": {"network": {"internetCIDR": "192.0.2.0/24"}}}, default_name="x")
    assert internet.host_ip(SimpleNamespace(config=other)) == "192.0.2.10"


@pytest.mark.skipif(find_dnsmasq() is None, reason="dnsmasq is not installed")
def test_internet_dns_is_authoritative_for_its_zone_and_refuses_the_rest(cluster, request):
    port = _free_port()
    records = {"A": {"www.example.net": "127.0.0.1", "example.net": "127.0.0.1"},
               "CNAME": {"web.example.net": "www.example.net"}}
    proc = _start(internet_dns_argv("127.0.0.1", records, domain="example.net", nameserver="ns1.example.net",
                                    hostmaster="hostmaster.example.net", reverse="127.0.0.0/24", port=port), request)
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            www = ask(port, "www.example.net", timeout=0.3)
            break
        except OSError:
            assert time.monotonic() < deadline, "dnsmasq did not answer within 10s"
            time.sleep(0.1)
    assert www.header.aa and answers(www) == ["127.0.0.1"]
    web = ask(port, "web.example.net")
    assert [QTYPE[rr.rtype] for rr in web.rr] == ["CNAME", "A"]
    nx = ask(port, "nope.example.net")
    assert nx.header.rcode == RCODE.NXDOMAIN and nx.auth[0].rtype == QTYPE.SOA
    assert answers(ask(port, "1.0.0.127.in-addr.arpa", "PTR")) in (["example.net."], ["www.example.net."])
    assert ask(port, "example.com").header.rcode == RCODE.REFUSED        # no upstream: nothing leaves


def test_endpoints_column_lists_each_port_of_each_address():
    # kubectl's formatEndpoints: kube-dns behind 53/UDP and 53/TCP is listed twice.
    from netlab.cli.get_cmds import endpoints_column
    from netlab.model.services import Endpoint
    pod = Endpoint("10.244.1.2", 53, "kube-system/kube-dns-x", "node1")
    assert endpoints_column({"dns": [pod], "dns-tcp": [pod]}) == "10.244.1.2:53,10.244.1.2:53"
    many = {"http": [Endpoint(f"10.244.1.{i}", 80, f"default/p{i}", "node1") for i in range(2, 7)]}
    assert endpoints_column(many) == "10.244.1.2:80,10.244.1.3:80,10.244.1.4:80 + 2 more..."
    assert endpoints_column({}) == "<none>"


def test_negative_answers_carry_the_soa_minimum_as_their_ttl(kubedns):
    # CoreDNS's SOA (plugin/backend_lookup.go): refresh 7200, retry 1800, expire 86400, minimum =
    # the record TTL; RFC 2308 caches NXDOMAIN for min(SOA TTL, minimum) = 30 s. (kube-dns's
    # skydns used minimum 60.) dnsmasq in front runs --no-negcache, as in the kube-dns pod.
    nx = ask(kubedns.port, f"nosuch.default.svc.{ZONE}")
    soa = nx.auth[0]
    assert soa.ttl == 30 and (soa.rdata.times[1:]) == (7200, 1800, 86400, 30)


def test_describe_says_where_kubedns_binds():
    from netlab.runtime.workloads.images import describe
    assert "0.0.0.0:10053" in describe("registry.k8s.io/dns/k8s-dns-kube-dns:1.22.28")


# ------------------------------------------------------------------ ExternalName (spec 2.5)


EXTERNAL = """
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: www.example.net.}
---
apiVersion: v1
kind: Service
metadata: {name: inside}
spec: {type: ExternalName, externalName: web.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
"""


def test_external_name_is_a_cname_and_nothing_else(tmp_path):
    (tmp_path / "svc.yaml").write_text(EXTERNAL)
    r = build_records(load_lab(tmp_path, seed=1))
    assert r["CNAME"] == {f"ext.default.svc.{ZONE}": "www.example.net",
                          f"inside.default.svc.{ZONE}": f"web.default.svc.{ZONE}"}
    assert not [n for n in list(r["A"]) + list(r["SRV"]) if n.endswith((f"ext.default.svc.{ZONE}",
                                                                        f"inside.default.svc.{ZONE}"))]


def _cname_zone() -> Zone:
    return Zone({"zone": ZONE, "namespaces": ["default"],
                 "A": {f"web.default.svc.{ZONE}": ["10.96.0.20"]},
                 "CNAME": {f"ext.default.svc.{ZONE}": "www.example.net",
                           f"inside.default.svc.{ZONE}": f"web.default.svc.{ZONE}",
                           f"twice.default.svc.{ZONE}": f"inside.default.svc.{ZONE}",
                           f"loop1.default.svc.{ZONE}": f"loop2.default.svc.{ZONE}",
                           f"loop2.default.svc.{ZONE}": f"loop1.default.svc.{ZONE}"}})


def _chain(reply: DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr]


def test_cname_chains_are_followed_inside_the_zone_and_upstream():
    zone, asked = _cname_zone(), []

    def upstream(name, qtype):
        asked.append((name, QTYPE[qtype]))
        return [RR(name + ".", QTYPE.A, ttl=300, rdata=A("203.0.113.10"))]

    ext = f"ext.default.svc.{ZONE}"
    assert _chain(zone.answer(DNSRecord.question(ext), upstream)) == [
        (ext + ".", "CNAME", "www.example.net."), ("www.example.net.", "A", "203.0.113.10")]
    assert asked == [("www.example.net", "A")]
    # Without an upstream the CNAME comes alone; asked for CNAME, only the CNAME.
    assert _chain(zone.answer(DNSRecord.question(ext))) == [(ext + ".", "CNAME", "www.example.net.")]
    assert [t for _, t, _ in _chain(zone.answer(DNSRecord.question(ext, "CNAME"), upstream))] == ["CNAME"]
    twice = f"twice.default.svc.{ZONE}"
    assert _chain(zone.answer(DNSRecord.question(twice))) == [
        (twice + ".", "CNAME", f"inside.default.svc.{ZONE}."),
        (f"inside.default.svc.{ZONE}.", "CNAME", f"web.default.svc.{ZONE}."),
        (f"web.default.svc.{ZONE}.", "A", "10.96.0.20")]
    loop = zone.answer(DNSRecord.question(f"loop1.default.svc.{ZONE}"))
    assert loop.header.rcode == RCODE.NOERROR and len(loop.rr) == 2          # stops at the loop


def test_server_resolves_an_external_name_through_its_nameserver(tmp_path):
    # The "internet": another server authoritative for example.net.
    (tmp_path / "net.json").write_text('{"zone": "example.net", "A": {"www.example.net": ["203.0.113.10"]}}')
    internet_dns = Server("127.0.0.1", 0, str(tmp_path / "net.json"))
    internet_dns.start()
    write_records(str(tmp_path / "dns.json"), _cname_zone_records())
    server = Server("127.0.0.1", 0, str(tmp_path / "dns.json"), nameservers=[f"127.0.0.1#{internet_dns.port}"])
    server.start()
    try:
        reply = ask(server.port, f"ext.default.svc.{ZONE}")
        assert [QTYPE[rr.rtype] for rr in reply.rr] == ["CNAME", "A"] and answers(reply)[0] == "203.0.113.10"
    finally:
        server.close()
        internet_dns.close()


def _cname_zone_records() -> dict:
    return {"zone": ZONE, "namespaces": ["default"], "CNAME": {f"ext.default.svc.{ZONE}": "www.example.net"}}


def test_nameservers_of_resolv_conf(tmp_path):
    (tmp_path / "resolv.conf").write_text("# netlab\nnameserver 203.0.113.10\nsearch x\nnameserver 10.0.0.2\n")
    assert nameservers_of(str(tmp_path / "resolv.conf")) == ["203.0.113.10", "10.0.0.2"]
    assert nameservers_of(str(tmp_path / "missing")) == []


def test_names_outside_the_zones_are_forwarded_when_there_are_nameservers(tmp_path):
    # skydns's ServeDNSForward: dnsmasq sends every in-addr.arpa name to kubedns.
    (tmp_path / "net.json").write_text('{"zone": "example.net", "reverse": ["203.0.113.0/24"], '
                                       '"PTR": {"10.113.0.203.in-addr.arpa": ["www.example.net"]}}')
    internet_dns = Server("127.0.0.1", 0, str(tmp_path / "net.json"))
    internet_dns.start()
    write_records(str(tmp_path / "dns.json"), _cname_zone_records())
    forwarding = Server("127.0.0.1", 0, str(tmp_path / "dns.json"), nameservers=[f"127.0.0.1#{internet_dns.port}"])
    forwarding.start()
    try:
        query = DNSRecord.question("10.113.0.203.in-addr.arpa", "PTR")
        query.add_ar(EDNS0(udp_len=1232))
        reply = DNSRecord.parse(query.send("127.0.0.1", forwarding.port, timeout=2))
        assert reply.header.id == query.header.id and answers(reply) == ["www.example.net."]
        assert len([r for r in reply.ar if r.rtype == QTYPE.OPT]) == 1
        assert ask(forwarding.port, "nothing.example.org").header.rcode == RCODE.REFUSED   # upstream's answer
    finally:
        forwarding.close()
        internet_dns.close()
