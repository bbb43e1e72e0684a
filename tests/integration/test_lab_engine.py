"""The lab engine for real: namespaces, veths, bridges, VXLAN, pods with real processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from netlab import engine, state
from netlab.kernel import netns
from netlab.model import names
from netlab.runtime import agent_client

from .netutil import http_get, root_links, tcp_connects, udp_request, web_lab_text

pytestmark = pytest.mark.root

# Three pods pinned over two nodes, one of them with two containers.
PINNED = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2, backend: %(backend)s}
---
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: web}}
spec:
  nodeName: node1
  containers:
  - name: web
    image: example/web
    ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]
  - name: sidecar
    image: example/sidecar
    ports: [{containerPort: 9090}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: web}}
spec:
  nodeName: node1
  containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: c, labels: {app: web}}
spec:
  nodeName: node2
  containers: [{name: web, image: example/web, ports: [{containerPort: 8080}]}]
"""


def _pods(cluster):
    return {p.meta.name: p for p in cluster.pods.values()}


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
def test_pod_to_pod_same_node_and_across_nodes(make_lab, backend):
    before = root_links()
    cluster = make_lab(manifests=PINNED % {"backend": backend})
    pods = _pods(cluster)
    a, b, c = pods["a"], pods["b"], pods["c"]
    a_ns = cluster.pod_netns(a)
    # Same node, through cni0: the server sees the client's own pod IP.
    assert http_get(a_ns, b.pod_ip, 8080, "/hostname") == "b"
    assert http_get(a_ns, b.pod_ip, 8080, "/clientip").split(":")[0] == a.pod_ip
    # Across nodes, by pod IP, without NAT.
    assert http_get(a_ns, c.pod_ip, 8080, "/hostname") == "c"
    assert http_get(a_ns, c.pod_ip, 8080, "/clientip").split(":")[0] == a.pod_ip
    assert http_get(cluster.pod_netns(c), a.pod_ip, 8080, "/clientip").split(":")[0] == c.pod_ip
    # UDP across nodes too (pod a serves UDP on 8081).
    assert udp_request(cluster.pod_netns(c), a.pod_ip, 8081, b"hostname") == b"a"
    assert root_links() == before, "a lab put devices into the host's namespace"


def test_containers_of_a_pod_share_localhost_hostname_and_pids(make_lab):
    cluster = make_lab(manifests=PINNED % {"backend": "vxlan"})
    a = _pods(cluster)["a"]
    ns = cluster.pod_netns(a)
    # The sidecar's port answers on the web container's localhost: one network namespace.
    assert http_get(ns, "127.0.0.1", 9090, "/hostname") == "a"
    assert udp_request(ns, "127.0.0.1", 8081, b"hostname") == b"a"
    holder = engine.pod_status(cluster.name)[a.meta.key]["holderPid"]
    out = subprocess.run(["nsenter", f"--target={holder}", "--pid", "--mount", "--uts",
                          "sh", "-c", "hostname; ls /proc | grep -c '^[0-9]'"],
                         capture_output=True, text=True, timeout=10, check=True).stdout.split()
    assert out[0] == "a"
    # PID 1 (the holder), the two containers and the shell itself, and nothing of the host's.
    assert 3 <= int(out[1]) <= 6


def test_lab_layout_in_the_kernel(make_lab):
    cluster = make_lab(manifests=PINNED % {"backend": "vxlan"})
    node1, node2 = cluster.nodes
    show = lambda ns, *cmd: subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                                           text=True, timeout=10, check=True).stdout
    links = show(node1.netns, "ip", "-d", "-j", "link", "show", "flannel.1")
    vx = json.loads(links)[0]
    assert vx["mtu"] == 1450 and vx["linkinfo"]["info_data"]["id"] == 1
    assert vx["linkinfo"]["info_data"]["port"] == 8472
    assert vx["address"] == node1.vtep_mac
    routes = show(node1.netns, "ip", "route")
    assert f"{node2.pod_cidr} via {node2.vtep_ip} dev flannel.1 proto static onlink" in routes
    assert f"{node2.vtep_ip} dev flannel.1 lladdr {node2.vtep_mac} PERMANENT" in show(node1.netns, "ip", "neigh")
    assert f"{node2.vtep_mac} dst {node2.internal_ip} self permanent" in show(node1.netns, "bridge", "fdb", "show", "dev", "flannel.1")
    pod_routes = show(cluster.pod_netns(_pods(cluster)["a"]), "ip", "route")
    assert pod_routes.startswith(f"default via {node1.gateway} dev eth0")


def test_cni0_keeps_its_mac_as_pods_join(make_lab):
    """cni0's MAC is set (0a:58 and its address, as the CNI bridge plugin sets it), so no
    new pod's veth can change it: a bridge left alone takes the lowest MAC of its ports, and
    the running pods' ARP entries for their gateway then lead to another pod."""
    cluster = make_lab(manifests=web_lab_text(replicas=1))
    pod = next(iter(cluster.pods.values()))
    node = cluster.node(pod.spec.node_name)
    link = lambda: json.loads(subprocess.run(["ip", "-n", node.netns, "-j", "link", "show", "cni0"],
                                             capture_output=True, text=True, check=True).stdout)[0]
    expected = "0a:58:" + ":".join(f"{int(x):02x}" for x in node.gateway.split("."))
    assert link()["address"] == expected
    first = cluster.pod_netns(pod)
    # The node's API listener, through the gateway: the pod learns cni0's MAC on the way.
    assert tcp_connects(first, node.internal_ip, 6443)
    engine.scale(cluster.name, "web", 30)
    engine.wait_for_pods(engine.load(cluster.name), 30)
    assert link()["address"] == expected
    neigh = subprocess.run(["ip", "-n", first, "-j", "neigh", "show", node.gateway],
                           capture_output=True, text=True, check=True).stdout
    assert [e["lladdr"] for e in json.loads(neigh)] == [expected]
    assert tcp_connects(first, node.internal_ip, 6443)


def test_down_removes_every_trace(make_lab):
    cluster = make_lab(manifests=PINNED % {"backend": "vxlan"})
    lab = cluster.name
    spaces = engine.lab_namespaces(lab)
    assert len(spaces) == 3 + len(cluster.nodes) + len(cluster.pods)   # underlay, client, internet
    inodes = [netns.inode(n) for n in spaces]
    assert netns.pids_in(inodes), "pods should have processes"
    engine.down(lab)
    assert engine.lab_namespaces(lab) == []
    assert not netns.pids_in(inodes)
    assert not agent_client.marked_processes(lab)
    assert not state.lab_dir(lab).exists()
    assert not list(state.ETC_NETNS.glob(f"{names.PREFIX}{lab}.*"))


def _crash(lab: str) -> None:
    """A crash: the agent is killed hard and the state directory is lost."""
    os.kill(agent_client.agent_pid(lab), 9)
    state.remove_lab_dir(lab)


def test_down_after_a_crash_without_state(make_lab):
    cluster = make_lab(manifests=PINNED % {"backend": "vxlan"})
    _crash(cluster.name)
    assert cluster.name in engine.running_labs()
    engine.down(cluster.name)
    assert engine.lab_namespaces(cluster.name) == []
    assert not agent_client.marked_processes(cluster.name)


def test_clean_removes_every_lab(make_lab):
    if engine.running_labs():
        pytest.skip("other labs are running on this machine; clean would remove them too")
    first = make_lab(manifests=PINNED % {"backend": "vxlan"})
    second = make_lab(manifests=PINNED % {"backend": "host-gw"})
    _crash(first.name)
    removed = {r["lab"] for r in engine.clean()}
    assert removed == {first.name, second.name}
    assert engine.running_labs() == []
    assert not agent_client.marked_processes()


def test_two_labs_side_by_side(make_lab):
    first = make_lab(manifests=PINNED % {"backend": "vxlan"})
    second = make_lab(manifests=PINNED % {"backend": "vxlan"})
    assert first.name != second.name
    for cluster in (first, second):
        pods = _pods(cluster)
        assert http_get(cluster.pod_netns(pods["a"]), pods["c"].pod_ip, 8080, "/hostname") == "c"
    engine.down(first.name)
    pods = _pods(second)
    assert http_get(second.pod_netns(pods["a"]), pods["c"].pod_ip, 8080, "/hostname") == "c"


def test_failed_up_rolls_back(make_lab, lab_name, monkeypatch, tmp_path):
    (tmp_path / "lab.yaml").write_text(PINNED % {"backend": "vxlan"})

    def broken(cluster, timeout, progress=None):
        raise RuntimeError("injected failure after the network was built and the pods started")
    monkeypatch.setattr(engine, "wait_for_started", broken)
    with pytest.raises(RuntimeError):
        engine.up(tmp_path, name=lab_name)
    assert engine.lab_namespaces(lab_name) == []
    assert not state.lab_dir(lab_name).exists()
    assert agent_client.marked_processes(lab_name) == []


def test_up_twice_is_refused(make_lab):
    cluster = make_lab(manifests=PINNED % {"backend": "vxlan"})
    with pytest.raises(Exception, match="already up"):
        engine.up(os.path.dirname(cluster.config.source), name=cluster.name)
    assert tcp_connects(cluster.pod_netns(_pods(cluster)["a"]), _pods(cluster)["c"].pod_ip, 8080)


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("content, expected", [
    ("kind: Pod\napiVersion: v1\nmetadata: {name: x}\nspec: {containers: [}\n", "invalid YAML: line 4"),
    ("apiVersion: v1\nkind: Deployment2\nmetadata: {name: x}\n", "Deployment2/x: kind"),
    ("apiVersion: v2\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n", "Pod/x: apiVersion"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {}\n", "Pod/x: spec.containers: Required value"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, lab_name, content, expected):
    (tmp_path / "bad.yaml").write_text(content)
    result = _cli("up", str(tmp_path), "--name", lab_name)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "bad.yaml" in lines[0], result.stderr
    assert engine.lab_namespaces(lab_name) == []
