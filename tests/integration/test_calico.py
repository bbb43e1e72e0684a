"""backend calico on real labs: BIRD on every node with its sessions Established, blocks
learned over BGP (proto bird), pods routed across nodes with nothing around their packets,
a stopped BIRD's routes withdrawn and back after heal, route reflectors, a block claimed while
the lab runs, and an IPIP pool refused on a kernel without ipip."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from netlab import engine
from netlab.model.errors import StateError
from netlab.model.objects import parse_object
from netlab.probe import catalog, runner
from netlab.probe.lab import LabView
from netlab.probe.result import Status
from netlab.runtime import bird

from .netutil import root_links, tcp_connects

pytestmark = pytest.mark.root

POD = """---
apiVersion: v1
kind: Pod
metadata: {name: %(name)s, labels: {app: web}}
spec: {nodeName: %(node)s, containers: [{name: c, image: netexec, ports: [{containerPort: 8080}]}]}
"""


def lab_text(nodes=2, calico="{}", pods=(("a1", "node1"), ("a2", "node1"), ("b1", "node2"))) -> str:
    head = f"""apiVersion: netlab/v1
kind: Lab
metadata: {{name: calico}}
spec: {{nodes: {nodes}, dns: false, backend: calico, calico: {calico}}}
"""
    return head + "".join(POD % {"name": n, "node": node} for n, node in pods)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def established(lab: str, node: str) -> set[str]:
    try:
        return {k for k, v in bird.protocols(lab, node).items() if v["info"].startswith("Established")}
    except StateError:
        return set()


def bird_route(ns: str, block: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "show", "exact", block],
                         capture_output=True, text=True).stdout.strip()
    return out


def verify(lab: str, *ids: str) -> dict[str, Status]:
    return {r.id: r.status for r in runner.run(LabView.load(lab), catalog.select(list(ids)))}


def reach(cluster, src: str, dst: str) -> bool:
    return tcp_connects(cluster.pod_netns(cluster.pod(src)), cluster.pod(dst).pod_ip, 8080, timeout=1.0)


def test_mesh_routes_and_traffic(make_lab):
    before = root_links()
    cluster = make_lab(manifests=lab_text())
    lab = cluster.name
    n1, n2 = cluster.nodes
    wait_until(lambda: established(lab, "node1") == {"Mesh_192_168_56_12"}, 15, "the mesh session")
    # node2's block arrives at node1 from BIRD, and node1 blackholes its own.
    wait_until(lambda: "proto bird" in bird_route(n1.netns, n2.pod_cidr), 10, "node2's block on node1")
    assert bird_route(n1.netns, n2.pod_cidr).startswith(f"{n2.pod_cidr} via {n2.internal_ip} dev eth0 proto bird")
    assert bird_route(n1.netns, n1.pod_cidr).startswith(f"blackhole {n1.pod_cidr} proto bird")
    # No bridge, no overlay device; cali veths with proxy_arp; the pod's /32 and 169.254.1.1.
    links = subprocess.run(["ip", "netns", "exec", n1.netns, "ip", "-o", "link"], capture_output=True,
                           text=True).stdout
    assert "cni0" not in links and "flannel" not in links and "tunl0" not in links
    assert links.count(": cali") == 2
    a1 = cluster.pod("a1")
    pod_routes = subprocess.run(["ip", "netns", "exec", cluster.pod_netns(a1), "ip", "route"],
                                capture_output=True, text=True).stdout
    assert "default via 169.254.1.1 dev eth0" in pod_routes and "onlink" in pod_routes
    assert reach(cluster, "a1", "b1") and reach(cluster, "b1", "a2") and reach(cluster, "a1", "a2")
    # birdc works through `netlab exec --node` as on a real node.
    out = subprocess.run([sys.executable, "-m", "netlab", "exec", "--lab", lab, "--node", "node2", "--",
                          "birdc", "show", "protocols"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "Mesh_192_168_56_11" in out.stdout and "Established" in out.stdout
    got = verify(lab, "calico-routed", "bgp-sessions", "bgp-routes", "pod-cross-node", "pod-ip-unique")
    assert all(s == Status.PASS for s in got.values()), got
    assert root_links() == before


def test_stop_bird_withdraws_routes_and_heal_restores(make_lab):
    cluster = make_lab(manifests=lab_text(calico="{bgpHoldTime: 6}"))
    lab = cluster.name
    n1, n2 = cluster.nodes
    wait_until(lambda: "proto bird" in bird_route(n1.netns, n2.pod_cidr), 15, "node2's block on node1")
    assert "stopped" in engine.inject_fault(lab, "stop-daemon", "node2", container="bird")
    # node1's BIRD hears the session close and withdraws what it learned from node2.
    wait_until(lambda: bird_route(n1.netns, n2.pod_cidr) == "", 15, "node2's block withdrawn on node1")
    assert not reach(cluster, "a1", "b1")
    assert reach(cluster, "a1", "a2")                # same node: no BGP involved
    got = verify(lab, "bgp-sessions", "bgp-routes")
    assert got == {"bgp-sessions": Status.FAIL, "bgp-routes": Status.FAIL}
    engine.heal_faults(lab)
    wait_until(lambda: "proto bird" in bird_route(n1.netns, n2.pod_cidr), 20, "node2's block back on node1")
    assert wait_until(lambda: reach(cluster, "a1", "b1"), 10, "a1 -> b1 again")
    assert verify(lab, "bgp-sessions")["bgp-sessions"] == Status.PASS


def test_route_reflector_and_a_block_claimed_live(make_lab):
    pods = (("a1", "node1"), ("b1", "node2"), ("c1", "node3"))
    cluster = make_lab(manifests=lab_text(3, "{routeReflectors: [node1], blockSize: 30}", pods))
    lab = cluster.name
    n1, n2, n3 = cluster.nodes
    wait_until(lambda: established(lab, "node1") == {"Node_192_168_56_12", "Node_192_168_56_13"}, 15,
               "the reflector's two sessions")
    assert established(lab, "node2") == {"Node_192_168_56_11"}      # clients peer only with the RR
    # node3's block reaches node2 through the reflector, next hop still node3.
    wait_until(lambda: f"via {n3.internal_ip}" in bird_route(n2.netns, n3.pod_cidr), 10, "reflected route")
    assert reach(cluster, "b1", "c1")
    # Four more pods on node3 fill its /30 block: it claims another, and BIRD announces it.
    docs = yaml.safe_load_all("".join(POD % {"name": f"c{i}", "node": "node3"} for i in range(2, 6)))
    engine.apply(lab, [parse_object(d, "<test>") for d in docs if d])
    cluster = engine.load(lab)
    blocks = cluster.ipam.blocks_of("node3")
    assert len(blocks) == 2
    wait_until(lambda: f"via {n3.internal_ip}" in bird_route(n2.netns, blocks[1]), 15, "the new block on node2")
    assert wait_until(lambda: reach(cluster, "b1", "c5"), 10, "b1 -> c5 in the new block")
    got = verify(lab, "bgp-sessions", "bgp-routes", "pod-cross-node")
    assert all(s == Status.PASS for s in got.values()), got


def test_ipip_refused_without_the_module(make_lab):
    if engine.kernel_has_ipip():
        pytest.skip("this kernel has ipip: the refusal is for kernels without it")
    with pytest.raises(StateError, match="ipip module"):
        make_lab(manifests=lab_text(calico="{ipipMode: Always}"))


def test_readme_commands(make_lab, lab_name):
    """Every command of the README's calico section runs as written (with --lab), on labs/calico."""
    import shlex
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    section = (repo / "README.md").read_text().split("## The calico backend")[1].split("\n## ")[0]
    blocks = [b.split("```")[0] for b in section.split("```sh\n")[1:]]
    assert len(blocks) == 2
    outputs = []
    for block in blocks:
        for line in block.splitlines():
            words = shlex.split(line.split("  #")[0].strip())
            assert words[:2] == ["sudo", "netlab"], line
            words = words[2:]
            if words[0] == "up":
                assert words == ["up", "labs/calico"]
                cluster = make_lab(repo / "labs" / "calico", name=lab_name)
                continue
            at = words.index("--") if "--" in words else len(words)
            done = subprocess.run([sys.executable, "-m", "netlab", *words[:at], "--lab", lab_name, *words[at:]],
                                  capture_output=True, text=True, timeout=120, cwd=repo)
            stopped = any("fault stop-bird" in o for o in outputs[-1:])
            assert done.returncode == 0 or (words == ["verify"] and stopped), (line, done.stdout, done.stderr)
            outputs.append(f"$ {' '.join(words)}\n{done.stdout}")
            if words[:2] == ["fault", "heal"]:
                assert not bird.wait_converged(cluster, 20)
    text = "\n".join(outputs)
    assert "Established" in text and "proto bird" in text and "3 passed, 0 failed" in text
    assert "bird on node node2 stopped" in text and "bgp-sessions" in text
    assert "default-deny" in text and "1 passed, 0 failed" in text and "⊘" in text
    assert "cali-FORWARD" in text and "dropped by NetworkPolicy on node2: cali-tw-cali" in text
