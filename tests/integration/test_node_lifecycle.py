"""A node added to and removed from a running lab (issue 12), on real labs: one calico lab
(BIRD sessions and routes follow without restarting the others) and one vxlan lab (VTEP
entries follow; a failed add is rolled back; the new node survives an agent restart).

Each lab is built once for its tests (module fixtures) and torn down whatever happens."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from netlab import engine, state
from netlab.kernel import netns
from netlab.model import names
from netlab.probe import catalog, runner
from netlab.probe.lab import LabView
from netlab.probe.result import Status
from netlab.runtime import bird

from .netutil import root_links, tcp_connects

pytestmark = pytest.mark.root

LAB = """apiVersion: netlab/v1
kind: Lab
metadata: {name: nd}
spec: {nodes: 2, dns: false, backend: %s}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 2
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"""


def build(backend: str, tmp_path_factory):
    """A 2-node lab named nd-..., torn down (and checked for leftovers) after the module."""
    lab = f"nd-{backend[:3]}-{uuid.uuid4().hex[:4]}"
    source = tmp_path_factory.mktemp(lab)
    (source / "lab.yaml").write_text(LAB % backend)
    before = root_links()
    try:
        yield engine.up(source, name=lab)
    finally:
        engine.teardown(lab)
        for kept in (state.STATE_ROOT / state.FAILED).glob(f"{lab}*"):    # a failed up's logs
            shutil.rmtree(kept, ignore_errors=True)
        assert not engine.lab_namespaces(lab), "namespaces left behind"
        # Others work on this machine too (Mininet's s1-eth1 ...): only devices named as a
        # lab names its own must not have appeared in the host's namespace.
        ours = ("ul-", "cali", "veth", "flannel", "cni0", "br0", "inet0")
        assert not [d for d in root_links() - before if d.startswith(ours)], "a lab device in the host's namespace"


@pytest.fixture(scope="module")
def calico_lab(tmp_path_factory):
    yield from build("calico", tmp_path_factory)


@pytest.fixture(scope="module")
def vxlan_lab(tmp_path_factory):
    yield from build("vxlan", tmp_path_factory)


def netlab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sh(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=10).stdout


def protocols(lab: str, node: str) -> dict[str, str]:
    """BGP sessions as `birdc show protocols` through `netlab exec --node` shows them:
    {name: "Established 12:00:01.123"} (state and since)."""
    out = netlab("exec", "--lab", lab, "--node", node, "--", "birdc", "show", "protocols").stdout
    return {p[0]: f"{p[5] if len(p) > 5 else p[3]} {p[4]}" for p in (line.split() for line in out.splitlines())
            if len(p) > 4 and p[1] == "BGP"}


def established(lab: str, node: str) -> set[str]:
    return {k for k, v in protocols(lab, node).items() if v.startswith("Established")}


def verify_fails(lab: str, *ids: str) -> dict[str, str]:
    """The checks of `netlab verify` that do not pass, with why ({} when all pass). Without
    ids: every check, as `netlab verify` runs them (n/a ones do not count)."""
    results = runner.run(LabView.load(lab), catalog.select(list(ids) or None))
    if ids:
        assert {r.id for r in results} == set(ids)
    return {r.id: f"{r.status.value}: {r.summary}" for r in results
            if r.status != Status.PASS and (ids or r.status != Status.NA)}


def audit_gaps(lab: str) -> dict[str, list[str]]:
    """What the kernel holds that the lab's state does not say, or the reverse (netlab/audit.py)."""
    from netlab.audit import audit
    return {k: v for k, v in audit(engine.load(lab), engine.ready_pods(lab)).items() if v}


def reach(cluster, src_key: str, dst_key: str) -> bool:
    src, dst = cluster.pods[src_key], cluster.pods[dst_key]
    return tcp_connects(cluster.pod_netns(src), dst.pod_ip, 8080, timeout=1.0)


def scale_to(lab: str, replicas: int):
    engine.scale(lab, "web", replicas)
    return settled(lab)


def settled(lab: str):
    """The lab's model once every pod serves (a removal's replacements too)."""
    engine.wait_for_pods(engine.load(lab), 30)
    return engine.load(lab)


def pod_on(cluster, node: str) -> str:
    keys = [p.meta.key for p in cluster.pods_on(node)]
    assert len(keys) == 1, (node, keys)
    return keys[0]


CHECKS = ("pod-cross-node", "service-clusterip", "nodeport-outside")


def test_calico_node_joins_the_mesh_and_leaves_it(calico_lab):
    lab = calico_lab.name
    wait_until(lambda: established(lab, "node1") == {"Mesh_192_168_56_12"}, 20, "the first session")
    old_session = protocols(lab, "node1")["Mesh_192_168_56_12"]

    out = netlab("node", "add", "--lab", lab).stdout
    assert out.startswith("node/node3 added: internal IP 192.168.56.13, pod CIDR "), out
    cluster = engine.load(lab)
    n1, n2, n3 = cluster.nodes
    assert n3.name == "node3" and n3.pod_cidr == out.split()[-1]
    # node3's BIRD peers with both; theirs learned it by `birdc configure`: the session
    # between node1 and node2 was not restarted.
    assert established(lab, "node1") == {"Mesh_192_168_56_12", "Mesh_192_168_56_13"}
    assert established(lab, "node2") == {"Mesh_192_168_56_11", "Mesh_192_168_56_13"}
    assert established(lab, "node3") == {"Mesh_192_168_56_11", "Mesh_192_168_56_12"}
    assert protocols(lab, "node1")["Mesh_192_168_56_12"] == old_session

    # A third replica lands on the empty new node, in its block; node1 routes there by BGP.
    cluster = scale_to(lab, 3)
    new_pod = pod_on(cluster, "node3")
    assert cluster.ipam.block_of(cluster.pods[new_pod].pod_ip) == n3.pod_cidr
    route = wait_until(lambda: sh(n1.netns, "ip", "route", "show", "exact", n3.pod_cidr).strip(), 10,
                       "node3's block on node1")
    assert route.startswith(f"{n3.pod_cidr} via {n3.internal_ip} dev eth0 proto bird"), route
    assert reach(cluster, pod_on(cluster, "node1"), new_pod) and reach(cluster, new_pod, pod_on(cluster, "node2"))
    assert verify_fails(lab) == {}
    assert verify_fails(lab, "bgp-sessions", "bgp-routes", "calico-routed", *CHECKS) == {}
    assert audit_gaps(lab) == {}

    out = netlab("node", "remove", "node3", "--lab", lab).stdout
    assert out.strip() == f"node/node3 removed; pods deleted: {new_pod}", out
    cluster = settled(lab)
    assert [n.name for n in cluster.nodes] == ["node1", "node2"]
    assert new_pod not in cluster.pods and len(cluster.rc_pods(cluster.rcs["default/web"])) == 3
    assert not netns.exists(n3.netns)
    assert names.uplink("node3") not in sh(names.underlay_netns(lab), "ip", "-o", "link")
    # The others' BIRDs dropped the peer, and with it node3's block.
    assert "Mesh_192_168_56_13" not in protocols(lab, "node1") | protocols(lab, "node2")
    for node in (n1, n2):
        assert sh(node.netns, "ip", "route", "show", "exact", n3.pod_cidr).strip() == ""
    assert n3.pod_cidr not in cluster.ipam.affinity
    assert not bird.config_path(lab, "node3").exists()
    assert verify_fails(lab, "bgp-sessions", "bgp-routes", *CHECKS) == {}
    assert audit_gaps(lab) == {}
    assert "node3" not in netlab("get", "nodes", "--lab", lab).stdout


def test_readme_commands(calico_lab):
    """Every command of the README's node section runs as written (with --lab) on the calico
    lab, after the test above left it with node1, node2 and three replicas of web."""
    import shlex
    from pathlib import Path
    lab = calico_lab.name
    assert [n.name for n in engine.load(lab).nodes] == ["node1", "node2"]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Nodes joining and leaving a running lab")[1].split("\n## ")[0]
    block = section.split("```sh\n")[1].split("```")[0]
    out = {}
    for line in block.splitlines():
        words = shlex.split(line.split("  #")[0].strip())
        assert words[:2] == ["sudo", "netlab"], line
        at = words.index("--") if "--" in words else len(words)
        done = netlab(*words[2:at], "--lab", lab, *words[at:])
        out[" ".join(words[2:at])] = done.stdout
    assert out["node add"].startswith("node/node3 added: internal IP 192.168.56.13")
    assert out["node add edge --label role=edge"].startswith("node/edge added: internal IP 192.168.56.14")
    assert "edge " in out["get nodes"] and "node3 " in out["get nodes"]
    birdc = out["exec --node node1"]
    assert "Mesh_192_168_56_13" in birdc and "Established" in birdc
    assert out["node remove node3"].startswith("node/node3 removed; pods deleted: default/web-")
    cluster = settled(lab)
    assert [n.name for n in cluster.nodes] == ["node1", "node2", "edge"]
    assert len(cluster.rc_pods(cluster.rcs["default/web"])) == 4 and len(cluster.pods_on("edge")) == 1
    assert established(lab, "node1") == {"Mesh_192_168_56_12", "Mesh_192_168_56_14"}


def vtep_entries(ns: str) -> str:
    return sh(ns, "ip", "route") + sh(ns, "ip", "neigh", "show", "dev", "flannel.1") + \
        sh(ns, "bridge", "fdb", "show", "dev", "flannel.1")


def test_vxlan_failed_add_is_rolled_back(vxlan_lab):
    """An add that fails half way (node2 has lost its flannel.1, so its route to the new VTEP
    cannot be made) leaves nothing: no namespace, no port, no entry on node1, the load
    balancer's route as it was."""
    lab = vxlan_lab.name
    n1, n2 = vxlan_lab.nodes
    underlay = names.underlay_netns(lab)
    before = (vtep_entries(n1.netns), sh(underlay, "ip", "route"), sh(underlay, "ip", "-o", "link"))
    subprocess.run(["ip", "netns", "exec", n2.netns, "ip", "link", "set", "flannel.1", "name", "flannel.x"], check=True)
    try:
        done = netlab("node", "add", "--lab", lab, check=False)
    finally:
        subprocess.run(["ip", "netns", "exec", n2.netns, "ip", "link", "set", "flannel.x", "name", "flannel.1"],
                       check=True)
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "device flannel.1 not found in " + n2.netns in done.stderr
    assert not netns.exists(names.node_netns(lab, "node3"))
    assert (vtep_entries(n1.netns), sh(underlay, "ip", "route"), sh(underlay, "ip", "-o", "link")) == before
    assert [n.name for n in engine.load(lab).nodes] == ["node1", "node2"]
    # Refusals are one line and a distinct exit code, and change nothing.
    done = netlab("node", "remove", "nope", "--lab", lab, check=False)
    assert (done.returncode, done.stderr) == (3, 'error: nodes "nope" not found (nodes: node1, node2)\n')
    done = netlab("node", "add", "node2", "--lab", lab, check=False)
    assert done.returncode == 2 and done.stderr.endswith("metadata.name: Invalid value: 'node2': already exists\n")
    assert [n.name for n in engine.load(lab).nodes] == ["node1", "node2"]


def bridge_mac(ns: str, dev: str) -> tuple[str, str]:
    """(MAC, addr_assign_type): 3 is NET_ADDR_SET, a MAC no port joining or leaving changes."""
    mac = sh(ns, "cat", f"/sys/class/net/{dev}/address").strip()
    return mac, sh(ns, "cat", f"/sys/class/net/{dev}/addr_assign_type").strip()


def test_vxlan_node_added_carries_traffic_survives_a_restart_and_leaves(vxlan_lab):
    lab = vxlan_lab.name
    # The router's MAC (br0's) stays what every node has in its ARP cache as ports come and go.
    router = bridge_mac(names.underlay_netns(lab), "br0")
    assert router[1] == "3", router
    node = engine.add_node(lab, "edge", {"role": "edge"})
    assert node["metadata"]["labels"]["role"] == "edge" and node["spec"]["podCIDR"] == "10.244.3.0/24"
    cluster = engine.load(lab)
    n1, n2, edge = cluster.nodes
    assert "10.244.3.0/24 via 10.244.3.0 dev flannel.1" in sh(n1.netns, "ip", "route")
    assert f"{edge.vtep_mac} dst {edge.internal_ip}" in sh(n2.netns, "bridge", "fdb", "show", "dev", "flannel.1")

    assert "192.168.56.13:6443" in netlab("get", "endpoints", "kubernetes", "--lab", lab).stdout
    cluster = scale_to(lab, 3)
    new_pod = pod_on(cluster, "edge")
    assert reach(cluster, pod_on(cluster, "node1"), new_pod) and reach(cluster, new_pod, pod_on(cluster, "node2"))
    assert verify_fails(lab) == {}
    assert verify_fails(lab, "vxlan-encap", "node-routes", *CHECKS) == {}
    assert audit_gaps(lab) == {}

    # The node is in the lab's state: a new agent runs its pods and daemons again.
    netlab("agent", "restart", "--lab", lab)
    status = netlab("status", "--lab", lab).stdout
    assert "nodes:  3/3 present" in status and "daemon: apiserver/edge running" in status
    cluster = engine.load(lab)
    assert wait_until(lambda: reach(cluster, pod_on(cluster, "node1"), new_pod), 10, "node1 -> edge again")

    gone = netlab("delete", "node", "edge", "--lab", lab).stdout     # kubectl's verb does the same
    assert gone.strip() == 'node "edge" deleted'
    cluster = settled(lab)
    assert [n.name for n in cluster.nodes] == ["node1", "node2"]
    assert new_pod not in cluster.pods and {p.spec.node_name for p in cluster.pods.values()} == {"node1", "node2"}
    for n in (n1, n2):
        assert "10.244.3.0" not in vtep_entries(n.netns) and edge.vtep_mac not in vtep_entries(n.netns)
    lb = sh(names.underlay_netns(lab), "ip", "route", "show", "198.51.100.0/28")
    assert edge.internal_ip not in lb and n1.internal_ip in lb
    assert not netns.exists(edge.netns)
    assert "192.168.56.13" not in netlab("get", "endpoints", "kubernetes", "--lab", lab).stdout
    assert bridge_mac(names.underlay_netns(lab), "br0") == router
    assert verify_fails(lab, "vxlan-encap", "node-routes", *CHECKS) == {}
    assert audit_gaps(lab) == {}

    # Added again at once: the same name, number, underlay port and address; then
    # `netlab clean LAB` removes the lab with it.
    engine.add_node(lab, "edge")
    cluster = scale_to(lab, 4)
    again = pod_on(cluster, "edge")
    assert wait_until(lambda: reach(cluster, pod_on(cluster, "node2"), again), 5, "node2 -> the new edge")
    # kubectl's `delete node` reaches the same route through the lab's API listener.
    kubectl = shutil.which("kubectl")
    if kubectl:
        engine.add_node(lab, "spare")
        config = netlab("kubeconfig", "--lab", lab).stdout.strip()
        done = subprocess.run([kubectl, "delete", "node", "spare"], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, KUBECONFIG=config))
        assert (done.returncode, done.stdout) == (0, 'node "spare" deleted\n'), done.stderr
        assert [n.name for n in engine.load(lab).nodes] == ["node1", "node2", "edge"]
    out = netlab("clean", lab).stdout
    assert out.startswith(f"removed lab {lab} (10 namespaces"), out
    assert not engine.lab_namespaces(lab) and lab not in engine.running_labs()
