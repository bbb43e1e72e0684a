"""flannel's udp backend on a real lab: flannel0 and flanneld on every node, pod traffic on one
node and across nodes, the UDP 8285 envelope on the underlay, a killed flanneld restarted, a
stopped one cutting exactly its node's cross-node traffic, and nothing left after down."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from netlab import engine, state
from netlab.kernel import netns
from netlab.probe import catalog, runner
from netlab.probe.lab import LabView
from netlab.probe.result import Status
from netlab.probe.trace import trace
from netlab.runtime import agent_client
from netlab.runtime.flanneld import subnets_file

from .netutil import http_get, root_links, tcp_connects

pytestmark = pytest.mark.root

LAB = """apiVersion: netlab/v1
kind: Lab
metadata: {name: udp}
spec: {nodes: 2, dns: false, backend: %(backend)s}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a2, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b1, labels: {app: web}}
spec: {nodeName: node2, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
"""


def udp_lab(make_lab):
    return make_lab(manifests=LAB % {"backend": "udp"})


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def flanneld(lab: str, node: str) -> dict:
    return agent_client.live_status(lab)["daemons"][f"flanneld/{node}"]


def reach(cluster, src: str, dst: str) -> bool:
    return tcp_connects(cluster.pod_netns(cluster.pod(src)), cluster.pod(dst).pod_ip, 8080, timeout=1.0)


def verify(lab: str, *ids: str) -> dict[str, Status]:
    return {r.id: r.status for r in runner.run(LabView.load(lab), catalog.select(list(ids)))}


def link_info(ns: str, dev: str) -> dict:
    with netns.open_netlink(ns) as ipr:
        link = ipr.link_lookup(ifname=dev)
        assert link, f"{dev} missing in {ns}"
        msg = ipr.get_links(link[0])[0]
        addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=link[0], family=socket.AF_INET)]
        routes = [f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.get_routes(family=socket.AF_INET, oif=link[0])
                  if r.get_attr("RTA_DST") and r["table"] == 254]
        kind = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND")
        return {"mtu": msg.get_attr("IFLA_MTU"), "kind": kind, "carrier": msg.get_attr("IFLA_CARRIER"),
                "addrs": addrs, "routes": routes}


def test_udp_lab_carries_pod_traffic_through_flanneld(make_lab):
    cluster = udp_lab(make_lab)
    lab = cluster.name
    assert cluster.config.backend == "udp"
    for node in cluster.nodes:
        info = link_info(node.netns, "flannel0")
        assert info["kind"] == "tun" and info["mtu"] == 1500 - 28 and info["carrier"] == 1
        assert info["addrs"] == [f"{node.vtep_ip}/16"] and "10.244.0.0/16" in info["routes"]
        assert not netns.ifindexes(node.netns, ["flannel.1"])
        # One flanneld per node, in that node's namespace, named so `ps -C flanneld` finds it.
        pid = flanneld(lab, node.name)["pid"]
        assert open(f"/proc/{pid}/comm").read().strip() == "flanneld"
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns.inode(node.netns)
    assert subnets_file(lab).read_text() == "10.244.1.0/24 192.168.56.11\n10.244.2.0/24 192.168.56.12\n"

    a1 = cluster.pod_netns(cluster.pod("a1"))
    assert http_get(a1, cluster.pod("a2").pod_ip, 8080, "/hostname") == "a2"          # same node: cni0
    assert http_get(a1, cluster.pod("b1").pod_ip, 8080, "/hostname") == "b1"          # across: flanneld
    b1 = cluster.pod_netns(cluster.pod("b1"))
    assert http_get(b1, cluster.pod("a1").pod_ip, 8080, "/clientip").startswith(cluster.pod("b1").pod_ip)
    # A payload bigger than one packet crosses whole (pod MTU 1472 leaves room for 28 bytes).
    assert len(http_get(a1, cluster.pod("b1").pod_ip, 8080, "/echo?msg=" + "x" * 6000)) == 6000

    results = verify(lab, "udp-encap", "node-routes", "pod-same-node", "pod-cross-node", "vxlan-encap")
    assert results == {"udp-encap": Status.PASS, "node-routes": Status.PASS, "pod-same-node": Status.PASS,
                       "pod-cross-node": Status.PASS, "vxlan-encap": Status.NA}

    # trace walks route -> flannel0 -> flanneld -> UDP 8285 -> peer flanneld -> flannel0 -> cni0,
    # both ways, and the real packet confirms it.
    result = trace(LabView.load(lab), "a1", "b1")
    (branch,) = result.branches
    walk = [h.what for h in branch.hops]
    assert branch.outcome == "delivered" and result.confirmed
    assert any(w.startswith("route get 10.244.2.") and w.endswith("dev flannel0") for w in walk)
    assert any("UDP 192.168.56.11:8285 > 192.168.56.12:8285" in w for w in walk)
    assert any("writes the inner packet into flannel0" in w for w in walk)
    assert any("UDP 192.168.56.12:8285 > 192.168.56.11:8285" in h.what for h in branch.reply)


def test_killed_flanneld_is_restarted_and_a_stopped_one_cuts_only_its_node(make_lab):
    cluster = udp_lab(make_lab)
    lab = cluster.name
    first = flanneld(lab, "node1")["pid"]
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: flanneld(lab, "node1")["pid"] not in (0, first), 10, "flanneld to come back")
    assert flanneld(lab, "node1")["restartCount"] == 1
    wait_until(lambda: reach(cluster, "a1", "b1") and reach(cluster, "b1", "a1"), 10, "cross-node traffic")

    assert "stopped" in engine.inject_fault(lab, "stop-daemon", "node1", container="flanneld")
    wait_until(lambda: flanneld(lab, "node1")["state"] == "Stopped", 5, "flanneld to stop")
    assert link_info(cluster.node("node1").netns, "flannel0")["carrier"] == 0      # nobody holds the TUN
    assert not reach(cluster, "a1", "b1") and not reach(cluster, "b1", "a1")        # to and from node1
    assert reach(cluster, "a1", "a2") and reach(cluster, "a2", "a1")                # node1's bridge still works
    results = verify(lab, "pod-same-node", "pod-cross-node", "udp-encap", "node-routes")
    assert results == {"pod-same-node": Status.PASS, "pod-cross-node": Status.FAIL,
                       "udp-encap": Status.FAIL, "node-routes": Status.PASS}
    result = trace(LabView.load(lab), "b1", "a1")         # the walk names the hop that drops it
    assert [b.outcome for b in result.branches] == ["dropped"] and result.confirmed
    assert "flanneld is not running" in result.branches[0].end

    assert "flanneld on node node1 runs again" in engine.heal_faults(lab)
    wait_until(lambda: flanneld(lab, "node1")["state"] == "Running", 10, "flanneld to run again")
    wait_until(lambda: reach(cluster, "a1", "b1") and reach(cluster, "b1", "a1"), 10, "cross-node traffic")
    assert verify(lab, "pod-cross-node", "udp-encap") == {"pod-cross-node": Status.PASS, "udp-encap": Status.PASS}


def test_flanneld_rereads_its_table_and_the_agent_keeps_it_in_line_with_the_nodes(make_lab):
    cluster = udp_lab(make_lab)
    lab = cluster.name
    path = subnets_file(lab)
    want = path.read_text()
    log = state.lab_dir(lab) / "flanneld-node1.log"
    before = log.read_text().count("subnets:")
    os.kill(flanneld(lab, "node1")["pid"], signal.SIGHUP)
    wait_until(lambda: log.read_text().count("subnets:") > before, 5, "flanneld to re-read its table on SIGHUP")
    # A table that no longer matches the lab's nodes is rewritten by the agent.
    path.write_text("10.244.1.0/24 192.168.56.11\n")
    wait_until(lambda: path.read_text() == want, 5, "the agent to restore the table")
    wait_until(lambda: reach(cluster, "a1", "b1"), 5, "cross-node traffic")


def test_down_leaves_no_tun_and_no_flanneld(make_lab):
    cluster = udp_lab(make_lab)
    lab = cluster.name
    pids = [flanneld(lab, n.name)["pid"] for n in cluster.nodes]
    assert all(netns.alive(p) for p in pids)
    host_links = root_links()
    engine.teardown(lab)
    assert not engine.lab_namespaces(lab)
    for pid in pids:
        wait_until(lambda: not netns.alive(pid), 5, f"flanneld {pid} to be gone")
    assert "flannel0" not in root_links() and root_links() <= host_links
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _comm(p) == "flanneld"
                and lab in _cmdline(p)]


def test_up_backend_udp_overrides_lab_yaml_and_get_nodes_shows_it(make_lab):
    import subprocess
    import sys
    cluster = make_lab(manifests=LAB % {"backend": "vxlan"}, backend="udp")     # `up --backend udp`
    assert cluster.config.backend == "udp"
    assert reach(cluster, "a1", "b1")
    out = subprocess.run([sys.executable, "-m", "netlab", "get", "nodes", "-o", "wide", "--lab", cluster.name],
                         capture_output=True, text=True, timeout=30)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and "BACKEND" in lines[0].split(), out.stdout
    col = lines[0].split().index("BACKEND")
    assert [line.split()[col] for line in lines[1:]] == ["udp", "udp"]


def _comm(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def test_every_check_of_the_verify_lab_passes_over_udp(make_lab):
    """The cross-node claims apply unchanged over flanneld: Services, NodePort and load balancer
    from outside, egress SNAT, DNS; udp-encap takes vxlan-encap's place."""
    from .test_verify import LAB as VERIFY_LAB, applicable, assert_outcome, settled
    from .test_verify import verify as verify_all
    cluster = settled(make_lab(manifests=VERIFY_LAB % {"backend": "udp"}))
    statuses = verify_all(cluster.name)
    assert statuses["vxlan-encap"] == Status.NA and statuses["udp-encap"] == Status.PASS
    assert_outcome(statuses, fail=set(),
                   applicable=applicable(cluster.name) - {"vxlan-encap"} | {"udp-encap"})
