"""apps/v1 for real: a Deployment's rolling update, driven by the agent step by step, keeps its
Service answering; rollout history and undo; a DaemonSet runs one pod per matching node; a
StatefulSet's pods come up in order with their stable DNS names (checked with dig)."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest

from netlab import engine
from netlab.model import workloads as W
from netlab.model.objects import parse_object
from netlab.rollout import rollout_state, wait_rollout

from .netutil import http_get

pytestmark = pytest.mark.root

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  minReadySeconds: 1
  selector: {matchLabels: {app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:IMAGE
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /hostname, port: http}
          periodSeconds: 1
"""

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2, dns: false}
---
""" + DEPLOY.replace("IMAGE", "2.40") + """
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node1
  containers: [{name: c, image: example/client, ports: [{containerPort: 9000}]}]
"""


def _pods(cluster, prefix: str) -> list[str]:
    return sorted(k.split("/", 1)[1] for k in cluster.pods if k.split("/", 1)[1].startswith(prefix))


def _update(lab: str, image: str) -> list[str]:
    import yaml
    return engine.apply(lab, [parse_object(yaml.safe_load(DEPLOY.replace("IMAGE", image)), "deploy.yaml")])


def test_rolling_update_keeps_the_service_answering(make_lab):
    cluster = make_lab(manifests=LAB)
    lab = cluster.name
    h1 = W.template_hash(cluster.apps["Deployment/default/web"].raw_template)
    first = _pods(cluster, "web-")
    assert len(first) == 2 and all(p.startswith(f"web-{h1}-") and len(p) == len(f"web-{h1}-") + 5
                                   for p in first), first
    wait_rollout(lab, "deployments", "web", timeout=30)
    client = cluster.pod_netns(cluster.pod("client"))
    ip = cluster.service("web").cluster_ip

    answers, failures, stop = [], [], threading.Event()

    def loop():
        deadline = time.monotonic() + 60          # bounded, whatever happens
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                answers.append(http_get(client, ip, 80, "/hostname", timeout=2.0))
            except Exception as exc:               # any failed request fails the test
                failures.append(repr(exc))
            time.sleep(0.02)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        assert _update(lab, "2.41") == ["deployment.apps/web configured"]
        seen = []
        wait_rollout(lab, "deployments", "web", timeout=45, say=seen.append)
    finally:
        stop.set()
        t.join(10)
    after = engine.load(lab)
    h2 = W.template_hash(after.apps["Deployment/default/web"].raw_template)
    now = _pods(after, "web-")
    assert len(now) == 2 and all(p.startswith(f"web-{h2}-") for p in now), now
    assert not failures, failures[:5]
    assert set(first) <= set(answers) and set(now) <= set(answers), (first, now, set(answers))
    assert seen[-1] == 'deployment "web" successfully rolled out', seen
    history = rollout_state(lab, "deployments", "web")["history"]
    assert [(h["revision"], h["replicas"]) for h in history] == [(1, 0), (2, 2)]

    # Undo: the first template is current again, as revision 3, rolled out by the agent.
    from netlab.runtime import agent_client
    agent_client.call(lab, "POST", "/apis/netlab.io/v1/namespaces/default/deployments/web/rollback", {})
    wait_rollout(lab, "deployments", "web", timeout=45)
    back = engine.load(lab)
    assert all(p.startswith(f"web-{h1}-") for p in _pods(back, "web-"))
    history = rollout_state(lab, "deployments", "web")["history"]
    assert [(h["revision"], h["name"]) for h in history] == [(2, f"web-{h2}"), (3, f"web-{h1}")]

    # Scale: the ReplicaSet follows.
    engine.scale(lab, "web", 3, kind="deployments")
    wait_rollout(lab, "deployments", "web", timeout=30)
    assert len(_pods(engine.load(lab), "web-")) == 3


DAEMONS = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec:
  dns: false
  nodes:
  - {name: node1, labels: {edge: "true"}}
  - {name: node2}
  - {name: node3, labels: {edge: "true"}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {edge: "true"}
      containers:
      - name: a
        image: example/agent
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: everywhere}
spec:
  selector: {matchLabels: {app: everywhere}}
  template:
    metadata: {labels: {app: everywhere}}
    spec:
      containers: [{name: a, image: example/agent, ports: [{containerPort: 8080}]}]
"""


def test_daemonset_one_pod_per_matching_node(make_lab):
    cluster = make_lab(manifests=DAEMONS)
    lab = cluster.name
    wait_rollout(lab, "daemonsets", "agent", timeout=30)
    wait_rollout(lab, "daemonsets", "everywhere", timeout=30)
    cluster = engine.load(lab)
    on = sorted(p.spec.node_name for p in cluster.pods.values() if p.meta.labels.get("app") == "agent")
    assert on == ["node1", "node3"]
    every = sorted(p.spec.node_name for p in cluster.pods.values() if p.meta.labels.get("app") == "everywhere")
    assert every == ["node1", "node2", "node3"]
    # A deleted pod is replaced on its node by the controller.
    gone = next(p for p in cluster.pods.values() if p.meta.labels.get("app") == "agent" and p.spec.node_name == "node3")
    engine.delete(lab, "pods", gone.meta.name)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        c = engine.load(lab)
        on = sorted(p.spec.node_name for p in c.pods.values() if p.meta.labels.get("app") == "agent")
        if on == ["node1", "node3"] and gone.meta.key not in c.pods:
            break
        time.sleep(0.2)
    assert on == ["node1", "node3"]
    wait_rollout(lab, "daemonsets", "agent", timeout=30)      # the replacement is ready
    c = engine.load(lab)
    for pod in (p for p in c.pods.values() if p.meta.labels.get("app") == "agent"):
        assert http_get(c.pod_netns(pod), pod.pod_ip, 8080, "/hostname") == pod.meta.name


STATEFUL = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 8080, name: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: example/db
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /hostname, port: http}
          periodSeconds: 1
"""


@pytest.mark.skipif(not shutil.which("dig"), reason="dig (dnsutils) is not installed")
def test_statefulset_in_order_with_stable_dns_names(make_lab):
    cluster = make_lab(manifests=STATEFUL)
    lab = cluster.name
    wait_rollout(lab, "statefulsets", "db", timeout=60)
    c = engine.load(lab)
    pods = sorted((p for p in c.pods.values() if p.meta.labels.get("app") == "db"), key=lambda p: p.meta.name)
    assert [p.meta.name for p in pods] == ["db-0", "db-1", "db-2"]
    # In order: each one was created after the one before it was ready.
    assert pods[0].created < pods[1].created < pods[2].created
    status = engine.pod_status(lab)

    def in_pod(pod, *command: str) -> str:
        """As `netlab exec`: the pod's namespaces, its resolv.conf and hostname."""
        holder = status[pod.meta.key]["holderPid"]
        return subprocess.run(["nsenter", f"--target={holder}", "--net", "--uts", "--ipc", "--pid", "--mount",
                               *command], capture_output=True, text=True, timeout=15).stdout
    for pod in pods:
        assert http_get(c.pod_netns(pod), pod.pod_ip, 8080, "/hostname") == pod.meta.name
        assert in_pod(pod, "hostname").strip() == pod.meta.name
        fqdn = f"{pod.meta.name}.db.default.svc.cluster.local"
        out = in_pod(pods[0], "dig", "+short", "+time=2", "+tries=2", fqdn).split()
        assert out == [pod.pod_ip], (fqdn, out)


KUBECTL_LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 2, dns: false}
"""


def test_kubectl_apply_get_set_image_and_rollout_status(make_lab, tmp_path):
    """The real kubectl against the lab: apply a Deployment, get it, change its image with
    `kubectl set image`, follow `kubectl rollout status` to the end, scale it."""
    import json
    import os
    import sys
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("no kubectl installed (scripts/setup.sh installs kubernetes-client)")
    cluster = make_lab(manifests=KUBECTL_LAB)
    config = subprocess.run([sys.executable, "-m", "netlab", "kubeconfig", "--lab", cluster.name],
                            capture_output=True, text=True, check=True).stdout.strip()

    def kube(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
        r = subprocess.run([kubectl, *args], capture_output=True, text=True, input=stdin, timeout=timeout,
                           env=dict(os.environ, KUBECONFIG=config, HOME=str(tmp_path)))
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
        return r.stdout
    assert "deployment.apps/web created" in kube("apply", "-f", "-", stdin=DEPLOY.replace("IMAGE", "2.40"))
    out = kube("rollout", "status", "deployment/web", "--timeout=40s", timeout=50)
    assert 'deployment "web" successfully rolled out' in out
    table = kube("get", "deploy")
    assert table.split("\n")[0].split()[:4] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE"]
    assert table.split("\n")[1].split()[:4] == ["web", "2/2", "2", "2"]
    kube("set", "image", "deployment/web", "web=registry.k8s.io/e2e-test-images/agnhost:2.41")
    out = kube("rollout", "status", "deployment/web", "--timeout=40s", timeout=50)
    assert out.strip().endswith('deployment "web" successfully rolled out')
    rss = json.loads(kube("get", "rs", "-o", "json"))["items"]
    assert sorted((rs["metadata"]["annotations"][W.REVISION], rs["spec"]["replicas"]) for rs in rss) == \
        [("1", 0), ("2", 2)]
    kube("scale", "deployment/web", "--replicas=1")
    kube("rollout", "status", "deployment/web", "--timeout=30s", timeout=40)
    pods = json.loads(kube("get", "pods", "-l", "app=web", "-o", "json"))["items"]
    assert len(pods) == 1 and pods[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert "deleted" in kube("delete", "deployment", "web")
