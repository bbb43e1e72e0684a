"""The lab agent for real: restarts, back-off, probes, controllers, node failure, and the
documents' claim about kube-proxy's two modes when a pod stops answering."""
from __future__ import annotations

import errno
import os
import signal
import socket
import time

import pytest

from netlab import engine
from netlab.kernel import iptables, netns
from netlab.model.services import endpoints_for
from netlab.plan import kubeproxy

from .netutil import http_get

pytestmark = pytest.mark.root

WEB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2, dns: false, proxyMode: %(mode)s}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 2
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: example/web
        ports: [{containerPort: 8080, name: http}]
%(probe)s
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node1
  containers: [{name: c, image: example/client, ports: [{containerPort: 9000}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""
READINESS = """        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1, failureThreshold: 1}"""


def web_lab(make_lab, mode="iptables", probe=""):
    return make_lab(manifests=WEB % {"mode": mode, "probe": probe})


def web_pods(cluster):
    return sorted((p for p in cluster.pods.values() if p.meta.labels.get("app") == "web"),
                  key=lambda p: p.meta.name)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def container(lab: str, key: str) -> dict:
    return engine.pod_status(lab)[key]["containers"][0]


def connect_outcomes(cluster, ip: str, port: int, count: int, timeout: float) -> list[str]:
    """`count` fresh connections from the client pod, each bounded by `timeout`."""
    ns = cluster.pod_netns(cluster.pod("client"))

    def run():
        netns.enter(ns)
        outcomes = []
        for _ in range(count):
            try:
                with socket.create_connection((ip, port), timeout=timeout) as s:
                    s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
                    s.settimeout(timeout)
                    outcomes.append("ok" if s.recv(64).startswith(b"HTTP/1.") else "empty")
            except OSError:
                outcomes.append("failed")
        return outcomes
    return netns.in_thread(run)


def test_killed_container_restarts_in_place_and_serves_again(make_lab):
    cluster = web_lab(make_lab)
    pod = web_pods(cluster)[0]
    first = container(cluster.name, pod.meta.key)["pid"]
    os.kill(first, signal.SIGKILL)
    st = wait_until(lambda: (c := container(cluster.name, pod.meta.key))["restartCount"] == 1
                    and c["state"] == "Running" and c, 10, "a restart")
    assert st["pid"] != first
    assert wait_until(lambda: engine.pod_status(cluster.name)[pod.meta.key]["serving"], 10, "serving")
    assert http_get(cluster.pod_netns(cluster.pod("client")), pod.pod_ip, 8080, "/hostname") == pod.meta.name
    assert any(e["reason"] == "Died" for e in engine.pod_status(cluster.name)[pod.meta.key]["events"])


def test_crashing_container_backs_off_and_leaves_no_orphans(make_lab):
    cluster = make_lab(manifests="""
apiVersion: netlab/v1
kind: Lab
metadata: {name: x}
spec: {nodes: 1, dns: false}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers: [{name: c, image: debian, command: [sh, -c, "sleep 0.2; exit 3"]}]
""", wait=0)
    key = "default/crash"
    st = wait_until(lambda: (c := container(cluster.name, key))["reason"] == "CrashLoopBackOff" and c,
                    15, "CrashLoopBackOff")
    assert st["exitCode"] == 3 and st["restartCount"] >= 1
    # The agent is alive and every process in the pod is the holder's or a live container's.
    from netlab.runtime import agent_client
    assert agent_client.agent_pid(cluster.name)
    holder = engine.pod_status(cluster.name)[key]["holderPid"]
    in_pod = netns.pids_in([netns.inode(cluster.pod_netns(cluster.pod("crash")))])
    zombies = [p for p in in_pod if open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"]
    assert holder in in_pod and not zombies


def test_deleted_pod_is_replaced_with_a_new_name_and_address(make_lab):
    cluster = web_lab(make_lab)
    old = web_pods(cluster)[0]
    engine.delete(cluster.name, "pods", old.meta.name)
    now = engine.load(cluster.name)
    pods = web_pods(now)
    assert len(pods) == 2 and old.meta.name not in [p.meta.name for p in pods]
    new = next(p for p in pods if p.meta.name != web_pods(cluster)[1].meta.name)
    assert new.pod_ip != old.pod_ip
    engine.wait_for_pods(now, 20)
    eps = {e.ip for lst in endpoints_for(now.service("web"), now.pods.values()).values() for e in lst}
    assert eps == {p.pod_ip for p in pods}
    assert not netns.exists(cluster.pod_netns(old))


def test_readiness_takes_a_dead_endpoint_out_and_iptables_mode_recovers(make_lab):
    cluster = web_lab(make_lab, probe=READINESS)
    svc = cluster.service("web")
    victim, survivor = web_pods(cluster)
    engine.inject_fault(cluster.name, "stop-server", victim.meta.name)
    sep = kubeproxy.sep_chain("default/web", "tcp", f"{victim.pod_ip}:8080")
    node = cluster.nodes[0]
    wait_until(lambda: sep not in iptables.list_chains(node.netns), 10, "the endpoint's chain to go")
    # The agent takes the endpoint out of the rules first, then reports the pod not ready.
    wait_until(lambda: not engine.pod_status(cluster.name)[victim.meta.key]["ready"], 2, "the pod to be unready")
    assert connect_outcomes(cluster, svc.cluster_ip, 80, 10, timeout=1.0) == ["ok"] * 10
    engine.heal_faults(cluster.name)
    wait_until(lambda: sep in iptables.list_chains(node.netns), 10, "the endpoint to come back")


def test_iptables_mode_cannot_retry_a_dead_endpoint(make_lab):
    cluster = web_lab(make_lab)        # no readiness probe: the dead pod stays in Endpoints
    victim = web_pods(cluster)[0]
    engine.inject_fault(cluster.name, "stop-server", victim.meta.name)
    outcomes = connect_outcomes(cluster, cluster.service("web").cluster_ip, 80, 20, timeout=0.5)
    # About half the new connections are sent to the silent pod and time out (P(0 of 20) ~ 1e-6).
    assert outcomes.count("failed") >= 1 and outcomes.count("ok") >= 1, outcomes


def test_userspace_mode_retries_another_endpoint(make_lab):
    cluster = web_lab(make_lab, mode="userspace")
    victim = web_pods(cluster)[0]
    engine.inject_fault(cluster.name, "stop-server", victim.meta.name)
    # The proxy's connect to the silent pod times out (0.5 s) and it tries the next one.
    outcomes = connect_outcomes(cluster, cluster.service("web").cluster_ip, 80, 8, timeout=3.0)
    assert outcomes == ["ok"] * 8


def test_node_down_evicts_and_the_rc_reschedules(make_lab):
    cluster = web_lab(make_lab)
    on_node2 = {p.meta.name for p in web_pods(cluster) if p.spec.node_name == "node2"}
    assert on_node2, "the scheduler spreads the RC over both nodes"
    engine.inject_fault(cluster.name, "node-down", "node2", grace=1.0)
    now = wait_until(lambda: (c := engine.load(cluster.name)) and "node2" in c.not_ready and c, 15,
                     "eviction")
    pods = web_pods(now)
    assert len(pods) == 2 and all(p.spec.node_name == "node1" for p in pods)
    assert not on_node2 & {p.meta.name for p in pods}
    engine.wait_for_pods(now, 20)
    seen = {http_get(now.pod_netns(now.pod("client")), now.service("web").cluster_ip, 80, "/hostname")
            for _ in range(10)}
    assert seen <= {p.meta.name for p in pods} and seen
    engine.heal_faults(cluster.name)


def test_agent_restart_picks_up_a_running_lab(make_lab):
    from netlab.runtime import agent_client
    cluster = web_lab(make_lab)
    os.kill(agent_client.agent_pid(cluster.name), signal.SIGKILL)
    wait_until(lambda: agent_client.agent_pid(cluster.name) is None, 5, "the agent to die")
    node_inodes = {n.netns: netns.inode(n.netns) for n in cluster.nodes}
    engine.restart_agent(cluster.name)
    assert agent_client.agent_pid(cluster.name)
    assert {n: netns.inode(n) for n in node_inodes} == node_inodes      # nothing was rebuilt
    pod = web_pods(cluster)[0]
    assert http_get(cluster.pod_netns(cluster.pod("client")), pod.pod_ip, 8080, "/hostname") == pod.meta.name


def test_rolling_update_replaces_pods_one_by_one(make_lab):
    from netlab.model.objects import parse_object
    cluster = web_lab(make_lab)
    new = parse_object({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web-v2"},
                        "spec": {"replicas": 2, "selector": {"app": "web", "version": "v2"},
                                 "template": {"metadata": {"labels": {"app": "web", "version": "v2"}},
                                              "spec": {"containers": [{"name": "web", "image": "example/web",
                                                                       "ports": [{"containerPort": 8080, "name": "http"}]}]}}}},
                       "v2.yaml")
    steps: list[str] = []
    engine.rolling_update(cluster.name, "web", new, say=steps.append)
    assert steps[:3] == ["Created web-v2", "Scaling web-v2 up to 1", "Scaling web down to 1"]
    now = engine.load(cluster.name)
    assert set(now.rcs) == {"default/web-v2"}
    pods = web_pods(now)
    assert len(pods) == 2 and all(p.meta.labels.get("version") == "v2" for p in pods)
    seen = {http_get(now.pod_netns(now.pod("client")), now.service("web").cluster_ip, 80, "/hostname")
            for _ in range(12)}
    assert seen == {p.meta.name for p in pods}


SLOW_START = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 1, dns: false}
---
apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  containers:
  - name: web
    image: python
    command: ["sh", "-c", "sleep 0.4 && exec python3 -m http.server 8080"]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 10}
"""


def test_a_server_still_starting_is_not_failed_by_its_first_readiness_probe(make_lab):
    """The agent probes at once when a container starts (kubelet's first probe would come at
    its next tick); a server that listens 0.4 s later is retried quietly within the first
    second, not failed and left unready for a whole period (10 s here)."""
    started = time.monotonic()
    cluster = make_lab(manifests=SLOW_START)
    st = engine.pod_status(cluster.name)["default/slow"]
    assert st["ready"] and st["serving"], st
    assert time.monotonic() - started < 8, "up waited for a second probe a period later"
    assert not [e for e in st["events"] if e["reason"] == "Unhealthy"], st["events"]


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_killed_pod_spawner_leaves_the_lab_supervised(make_lab):
    """The pods' processes are the pod spawner's children (runtime/spawner.py). Killed, it
    hands them to the agent, which still sees a container die and restarts it, and starts
    new pods through a new spawner."""
    from netlab.runtime import agent_client
    cluster = web_lab(make_lab)
    pod = web_pods(cluster)[0]
    agent = agent_client.agent_pid(cluster.name)
    holder = engine.pod_status(cluster.name)[pod.meta.key]["holderPid"]
    spawner = _ppid(holder)
    assert spawner != agent and _ppid(spawner) == agent
    os.kill(spawner, signal.SIGKILL)
    wait_until(lambda: _ppid(holder) == agent, 5, "the holder handed to the agent")
    first = container(cluster.name, pod.meta.key)["pid"]
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: (c := container(cluster.name, pod.meta.key))["restartCount"] == 1
               and c["state"] == "Running", 10, "a restart after the spawner died")
    engine.delete(cluster.name, "pods", web_pods(cluster)[1].meta.name)
    now = engine.load(cluster.name)
    engine.wait_for_pods(now, 20)
    for p in web_pods(now):
        assert http_get(cluster.pod_netns(cluster.pod("client")), p.pod_ip, 8080, "/hostname") == p.meta.name


def test_a_builtin_container_holds_no_descriptor_of_the_runtime(make_lab):
    """A built-in workload runs on in the forked process, so nothing of the agent's or the
    spawner's may stay open in it: no socket to the agent, no namespace it holds."""
    cluster = web_lab(make_lab)
    pid = container(cluster.name, web_pods(cluster)[0].meta.key)["pid"]
    targets = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert targets["1"].endswith("_web.log") and targets["2"] == targets["1"]
    assert not [t for t in targets.values() if ":[" in t and not t.startswith(("socket:", "pipe:", "anon_inode:"))], targets
    # Its only socket is its own server's, listening on 8080: none to the agent or spawner.
    sockets = {t[len("socket:["):-1] for t in targets.values() if t.startswith("socket:")}
    with open(f"/proc/{pid}/net/tcp") as f:
        listening = {line.split()[9] for line in f.readlines()[1:] if line.split()[3] == "0A"}
    assert len(sockets) == 1 and sockets <= listening, (targets, listening)


EARLY_CLIENT = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 1, dns: false}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: early}
spec:
  replicas: 1
  selector: {app: early}
  template:
    metadata: {labels: {app: early}}
    spec:
      containers:
      - name: c
        image: python
        # Connects to a Service that has no endpoints the moment it starts: five tries, each
        # with a fresh socket (the node answers at most six in a burst: ICMP's rate limit),
        # then it idles. Prints one errno (or "timeout") per try.
        command: ["python3", "-c", "import socket, time\\nfor _ in range(5):\\n    s = socket.socket(); s.settimeout(0.15)\\n    try:\\n        s.connect(('%(ip)s', 80)); print('connected', flush=True)\\n    except socket.timeout:\\n        print('timeout', flush=True)\\n    except OSError as e:\\n        print(e.errno, flush=True)\\n    s.close(); time.sleep(0.02)\\ntime.sleep(3600)"]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: filler}
spec:
  replicas: %(fillers)d
  selector: {app: filler}
  template:
    metadata: {labels: {app: filler}}
    spec:
      containers: [{name: p, image: pause}]
---
apiVersion: v1
kind: Service
metadata: {name: nowhere}
spec:
  clusterIP: %(ip)s
  selector: {app: nothing}
  ports: [{port: 80}]
"""


@pytest.mark.parametrize("fillers", [60, 5])
def test_service_rules_are_in_place_before_the_first_pod_starts(make_lab, fillers):
    """A Service exists before the pods that use it, so kube-proxy's rules for it are on the
    node before any container runs: a connection to a Service without endpoints is refused
    from the first try. `up` starts the first pods while it still wires the rest (60 more);
    before the agent synced the Services first, those tries left the node with no rule to
    translate or reject them and timed out (as a redis replica's did, for 60 s). With 5, all
    pods are one batch, and `up`'s "all wired" may reach the agent before it starts them."""
    from netlab import state
    cluster = make_lab(manifests=EARLY_CLIENT % {"ip": "10.96.0.200", "fillers": fillers})
    early = next(p for p in cluster.pods.values() if p.meta.labels.get("app") == "early")
    assert early is next(iter(cluster.pods.values())), "the early pod is not in up's first batch"
    log = state.container_log(cluster.name, "default", early.meta.name, "c")
    wait_until(lambda: log.is_file() and len(log.read_text().split()) >= 5, 10, "the early pod's five tries")
    assert log.read_text().split() == [str(errno.ECONNREFUSED)] * 5
