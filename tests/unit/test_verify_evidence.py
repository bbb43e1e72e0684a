"""verify's judgement without a lab (no root): evidence kinds and the verdict guard, reading
kube-proxy's rules (missing, unreadable), and the environment-variable comparison."""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from netlab.model.objects import Meta, Service, ServicePort
from netlab.model.services import Endpoint
from netlab.probe import catalog, proxyrules, report, rules
from netlab.probe.checks.discovery import expected_vars, judge_env
from netlab.probe.result import PACKET, SOCKET, STATE, CheckResult, Evidence, Status

# ---------------------------------------------------------------------- evidence kinds


def test_a_packet_check_that_only_read_state_cannot_pass():
    ev = Evidence(PACKET)
    ev.read("node node1", "nat", "read nat rules", "DNAT to 10.244.1.2:80", True)
    ev.add("pod a", "10.96.0.2:80", "TCP connect", "connected", True, kind=SOCKET)
    status, summary = ev.verdict("fine")
    assert status == Status.FAIL and "no packet probe" in summary


def test_a_socket_check_passes_on_a_connection_and_fails_on_reads_alone():
    ev = Evidence(SOCKET)
    ev.read("node node1", "nat", "read nat rules", "ok", True)
    assert ev.verdict("fine")[0] == Status.FAIL
    ev.add("pod a", "10.96.0.2:80", "TCP connect", "connected", True)
    assert ev.verdict("fine") == (Status.PASS, "fine")
    assert [p.kind for p in ev.probes] == [STATE, SOCKET]


def test_a_state_check_needs_a_read_and_nothing_at_all_never_passes():
    assert Evidence(STATE).verdict("fine") == (Status.FAIL, "nothing could be read")
    assert Evidence(SOCKET).verdict("fine")[1] == "no probe could be sent"
    ev = Evidence(STATE)
    ev.read("node node1", "routes", "route get", "dev cni0", True)
    assert ev.verdict("fine")[0] == Status.PASS


def test_a_failed_read_fails_the_check_with_its_detail():
    ev = Evidence(SOCKET)
    ev.read("node node1", "10.96.0.2:80/tcp", "read nat rules", "nat chain KUBE-SERVICES is missing", False,
            "DNAT to each endpoint")
    ev.add("pod a", "10.96.0.2:80", "TCP connect", "connected", True)
    status, summary = ev.verdict("fine")
    assert status == Status.FAIL and "KUBE-SERVICES is missing" in summary


def test_every_check_declares_its_evidence_and_state_checks_are_labelled():
    kinds = {c.id: c.evidence for c in catalog.catalog()}
    assert kinds["vxlan-encap"] == PACKET
    assert {k for k, v in kinds.items() if v == STATE} >= {"pod-shared-namespaces", "pod-ip-unique", "node-routes",
                                                          "env-service-vars", "env-namespace-scoped"}
    assert kinds["service-clusterip"] == kinds["pod-cross-node"] == SOCKET


def test_reports_show_the_evidence_kind():
    result = CheckResult("node-routes", "claim", "doc", Status.PASS, "ok", evidence=STATE)
    ev = Evidence(STATE)
    ev.read("node node1", "10.244.2.2", "route get", "dev flannel.1", True)
    result.probes = ev.probes
    data = json.loads(report.to_json("lab", [result], 1.0))
    assert data["checks"][0]["evidence"] == "state" and data["checks"][0]["probes"][0]["kind"] == "state"
    case = ET.fromstring(report.to_junit("lab", [result], 1.0)).find("testcase")
    assert case.find("properties/property").get("value") == "state"
    assert "state" in report.probe_line(result.probes[0])


# ---------------------------------------------------------------------- reading the rules


def test_an_unreadable_table_raises_instead_of_reading_as_empty(monkeypatch):
    def failing(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 1, "", "iptables-legacy-save: Permission denied (you must be root)\n")
    monkeypatch.setattr(rules.subprocess, "run", failing)
    with pytest.raises(rules.Unreadable, match="Permission denied"):
        rules.read("nosuch-ns", ("nat",))

    def silent(argv, **kwargs):       # exit 0, but no table in the output
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(rules.subprocess, "run", silent)
    with pytest.raises(rules.Unreadable, match=r"no \*nat"):
        rules.read("nosuch-ns", ("nat",))


NAT = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SEP-B - [0:0]
[0:0] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[0:0] -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
%(services)s
[0:0] -A KUBE-SVC-X -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A
[0:0] -A KUBE-SVC-X -j KUBE-SEP-B
[0:0] -A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080
[0:0] -A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination 10.244.2.2:8080
COMMIT
"""
RULE = ('[0:0] -A KUBE-SERVICES -d 10.96.0.2/32 -p tcp -m comment --comment "default/web cluster IP" '
        '-m tcp --dport 80 -j KUBE-SVC-X')
EPS = [Endpoint("10.244.1.2", 8080, "default/a", "node1"), Endpoint("10.244.2.2", 8080, "default/c", "node2")]


class FakeTables:
    def __init__(self, text: str | None):
        self.text = text

    def get(self, node, table):
        if self.text is None:
            raise rules.Unreadable("cannot read the nat table of x-node1: iptables-legacy-save: exit status 1")
        return rules.parse(self.text)[table]


def _setting(mode: str = "iptables"):
    node = SimpleNamespace(name="node1", internal_ip="192.168.56.11", gateway="10.244.1.1", vtep_ip="10.244.1.0")
    view = SimpleNamespace(proxy_mode=mode, pods_on=lambda n: [SimpleNamespace(pod_ip="10.244.1.5")],
                           client_ip="192.168.56.2")
    svc = Service(Meta("web"), [ServicePort(80, target_port=8080)], cluster_ip="10.96.0.2")
    return view, node, svc


def _expect(text: str | None, way: str = "pod", mode: str = "iptables") -> tuple[bool, str]:
    view, node, svc = _setting(mode)
    ev = Evidence(SOCKET)
    ok = proxyrules.expect_rules(view, ev, FakeTables(text), node, svc, svc.ports[0], EPS,
                                 proxyrules.Entry(way, "10.96.0.2", 80))
    assert ev.probes[0].kind == STATE
    return ok, ev.probes[0].seen


def test_rules_for_a_service_with_endpoints_pass():
    ok, seen = _expect(NAT % {"services": RULE})
    assert ok and seen == "DNAT to 10.244.1.2:8080, 10.244.2.2:8080"
    assert _expect(NAT % {"services": RULE}, way="node")[0]


def test_a_flushed_kube_services_chain_is_a_missing_rule():
    ok, seen = _expect(NAT % {"services": ""})
    assert not ok and seen.startswith("no rule for 10.96.0.2:80/tcp in KUBE-SERVICES")


def test_a_missing_chain_and_a_missing_jump_say_so():
    without_chain = "\n".join(line for line in (NAT % {"services": ""}).splitlines() if "KUBE-SERVICES" not in line)
    ok, seen = _expect(without_chain)
    assert not ok and seen.startswith("nat chain KUBE-SERVICES is missing")
    without_jump = "\n".join(line for line in (NAT % {"services": RULE}).splitlines() if "-A PREROUTING" not in line)
    ok, seen = _expect(without_jump)
    assert not ok and seen.startswith("nat PREROUTING has no jump to KUBE-SERVICES")


def test_an_endpoint_the_rules_never_reach_fails():
    one = (NAT % {"services": RULE}).replace("[0:0] -A KUBE-SVC-X -m statistic --mode random "
                                             "--probability 0.50000000000 -j KUBE-SEP-A\n", "")
    ok, seen = _expect(one)
    assert not ok and "never to 10.244.1.2:8080" in seen


def test_an_unreadable_table_is_a_failed_read():
    ok, seen = _expect(None)
    assert not ok and "cannot read the nat table" in seen


USERSPACE = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
[0:0] -A PREROUTING -m comment --comment "handle ClusterIPs" -j KUBE-PORTALS-CONTAINER
[0:0] -A OUTPUT -m comment --comment "handle ClusterIPs" -j KUBE-PORTALS-HOST
%(rules)s
COMMIT
"""
PORTALS = ('[0:0] -A KUBE-PORTALS-CONTAINER -d 10.96.0.2/32 -p tcp -m comment --comment "default/web:" -m tcp '
           '--dport 80 -j REDIRECT --to-ports 41234\n'
           '[0:0] -A KUBE-PORTALS-HOST -d 10.96.0.2/32 -p tcp -m comment --comment "default/web:" -m tcp '
           '--dport 80 -j DNAT --to-destination 192.168.56.11:41234')


def test_userspace_portal_rules():
    assert _expect(USERSPACE % {"rules": PORTALS}, mode="userspace")[0]
    assert _expect(USERSPACE % {"rules": PORTALS}, way="node", mode="userspace")[0]
    ok, seen = _expect(USERSPACE % {"rules": ""}, mode="userspace")
    assert not ok and seen.startswith("no rule for 10.96.0.2:80/tcp in KUBE-PORTALS-CONTAINER")


# ---------------------------------------------------------------------- environment variables


def _svc(name: str, ip: str, created: float = 0.0) -> Service:
    svc = Service(Meta(name), [ServicePort(80)], cluster_ip=ip)
    if created:
        svc.created = created       # set by the model once it records Service creation times
    return svc


def test_env_as_documented_passes_and_a_wrong_value_fails():
    old = _svc("redis-master", "10.96.0.11", created=100.0)
    env = expected_vars(old)
    assert env["REDIS_MASTER_SERVICE_HOST"] == "10.96.0.11" and env["REDIS_MASTER_PORT"] == "tcp://10.96.0.11:80"
    assert judge_env(env, [old], started=200.0)[1] == []
    wrong = judge_env({**env, "REDIS_MASTER_SERVICE_HOST": "10.96.0.99"}, [old], started=200.0)[1]
    assert wrong == ["REDIS_MASTER_SERVICE_HOST=10.96.0.99"]
    # Missing wholly, though created before the container started: a failure.
    assert judge_env({}, [old], started=200.0)[1]


def test_a_service_created_after_the_container_started_is_rightly_absent():
    late = _svc("late", "10.96.0.12", created=300.0)
    want, wrong, absent, later = judge_env({}, [late], started=200.0)
    assert (want, wrong, absent, later) == ({}, [], [], ["default/late"])


def test_without_a_creation_time_absent_is_allowed_but_partial_is_not():
    undated = _svc("web", "10.96.0.2")
    assert judge_env({}, [undated], started=200.0)[2] == ["default/web"]
    partial = {"WEB_SERVICE_HOST": "10.96.0.2"}
    assert judge_env(partial, [undated], started=200.0)[1]

