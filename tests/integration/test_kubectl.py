"""The real kubectl against a lab (issue 15), and the `kubernetes` Service (issue 10, item 5).

Runs with every kubectl found: the one on PATH (a current kubectl) and Debian's
kubernetes-client (kubectl 1.20) when NETLAB_KUBECTL_OLD names it (scripts/setup.sh installs
kubernetes-client when no kubectl is on PATH)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest
import yaml

from .netutil import web_lab_text

pytestmark = pytest.mark.root

LAB = web_lab_text()

SVC = """apiVersion: v1
kind: Service
metadata:
  name: extra
  labels: {tier: %s}
spec:
  selector: {app: web}
  ports: [{port: %d, targetPort: 8080}]
"""


def kubectls() -> list[str]:
    found = [k for k in (shutil.which("kubectl"), os.environ.get("NETLAB_KUBECTL_OLD")) if k and os.path.exists(k)]
    return found or [None]


def netlab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True, check=check)


@pytest.fixture(params=kubectls())
def kube(request, make_lab, tmp_path):
    if request.param is None:
        pytest.skip("no kubectl installed (scripts/setup.sh installs kubernetes-client)")
    cluster = make_lab(manifests=LAB)
    config = netlab("kubeconfig", "--lab", cluster.name).stdout.strip()

    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([request.param, *args], capture_output=True, text=True, input=stdin,
                                env=dict(os.environ, KUBECONFIG=config, HOME=str(tmp_path)), timeout=60)
        if check and result.returncode:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result
    run.cluster, run.config, run.binary = cluster, config, request.param
    return run


def pod_names(kube) -> list[str]:
    return sorted(p["metadata"]["name"] for p in json.loads(kube("get", "pods", "-o", "json").stdout)["items"])


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_kubeconfig_is_private_and_listens_only_on_loopback(kube):
    st = os.stat(kube.config)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    doc = yaml.safe_load(open(kube.config))
    server = doc["clusters"][0]["cluster"]["server"]
    assert server.startswith("https://127.0.0.1:")
    assert doc["users"][0]["user"]["token"] and doc["clusters"][0]["cluster"]["certificate-authority-data"]
    # Without the token: 401, as an API server answers an unauthenticated client.
    out = subprocess.run(["curl", "-s", "--cacert", "/dev/stdin", f"{server}/api/v1/pods"], capture_output=True,
                         text=True, input=__import__("base64").b64decode(
                             doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode())
    assert json.loads(out.stdout)["code"] == 401


def test_get_describe_and_errors(kube):
    pods = json.loads(kube("get", "pods", "-o", "json").stdout)["items"]
    assert len(pods) == 2
    for p in pods:
        assert p["status"]["podIP"].startswith("10.244.") and p["status"]["phase"] == "Running"
        assert p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"
        assert p["metadata"]["annotations"]["netlab.io/netns"].startswith("netlab-")
    table = kube("get", "pods", "-o", "wide").stdout.splitlines()
    assert table[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert all(" Running " in line and "1/1" in line for line in table[1:])
    nodes = kube("get", "nodes").stdout
    assert "node1" in nodes and "Ready" in nodes
    svc = yaml.safe_load(kube("get", "svc", "web", "-o", "yaml").stdout)
    assert svc["spec"]["clusterIP"].startswith("10.96.") and svc["kind"] == "Service"
    described = kube("describe", "pod", pods[0]["metadata"]["name"]).stdout
    assert "Node:" in described and "Events:" in described and "Started container web" in described
    assert "Endpoints:" in kube("describe", "svc", "web").stdout
    assert "Scheduled" in kube("get", "events").stdout
    missing = kube("get", "pod", "nope", check=False)
    assert missing.returncode == 1 and 'Error from server (NotFound): pods "nope" not found' in missing.stderr
    again = kube("create", "-f", "-", check=False, stdin=(SVC % ("a", 80)).replace("name: extra", "name: web"))
    assert "AlreadyExists" in again.stderr
    bad = kube("apply", "-f", "-", check=False, stdin=SVC % ("a", 70000))
    assert bad.returncode == 1 and "Invalid" in bad.stderr and "spec.ports[0].port" in bad.stderr
    stale = json.loads(kube("get", "svc", "web", "-o", "json").stdout)
    kube("label", "svc", "web", "touched=yes")
    conflict = kube("replace", "-f", "-", check=False, stdin=json.dumps(stale))
    assert conflict.returncode == 1 and "Conflict" in conflict.stderr and "has been modified" in conflict.stderr
    execd = kube("exec", pods[0]["metadata"]["name"], "--", "true", check=False)
    assert execd.returncode != 0 and "netlab exec" in execd.stderr


def test_apply_is_idempotent_and_patches(kube):
    assert "service/extra created" in kube("apply", "-f", "-", stdin=SVC % ("a", 81)).stdout
    assert "service/extra unchanged" in kube("apply", "-f", "-", stdin=SVC % ("a", 81)).stdout
    ip = kube("get", "svc", "extra", "-o", "jsonpath={.spec.clusterIP}").stdout
    assert "service/extra configured" in kube("apply", "-f", "-", stdin=SVC % ("b", 82)).stdout
    svc = json.loads(kube("get", "svc", "extra", "-o", "json").stdout)
    assert svc["spec"]["ports"][0]["port"] == 82 and svc["metadata"]["labels"] == {"tier": "b"}
    assert svc["spec"]["clusterIP"] == ip                    # an update keeps the address
    assert "kubectl.kubernetes.io/last-applied-configuration" in svc["metadata"]["annotations"]
    pod = pod_names(kube)[0]
    kube("label", "pod", pod, "color=blue")
    kube("annotate", "pod", pod, "note=hi")
    meta = json.loads(kube("get", "pod", pod, "-o", "json").stdout)["metadata"]
    assert meta["labels"]["color"] == "blue" and meta["annotations"]["note"] == "hi"
    # Merge and JSON patches too.
    kube("patch", "svc", "extra", "--type", "merge", "-p", '{"metadata":{"labels":{"tier":"c"}}}')
    kube("patch", "svc", "extra", "--type", "json", "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":83}]')
    svc = json.loads(kube("get", "svc", "extra", "-o", "json").stdout)
    assert svc["metadata"]["labels"]["tier"] == "c" and svc["spec"]["ports"][0]["port"] == 83
    assert 'service "extra" deleted' in kube("delete", "svc", "extra").stdout
    assert kube("get", "svc", "extra", check=False).returncode == 1


def serving(kube, ip: str) -> set[str]:
    pod = pod_names(kube)[0]
    out = netlab("exec", "--lab", kube.cluster.name, pod, "--", "sh", "-c",
                 f"for i in $(seq 40); do curl -s -m 2 http://{ip}/hostname; echo; done").stdout
    return {line for line in out.split() if line}


def test_scale_delete_logs_and_watch(kube):
    ip = kube("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}").stdout
    watch = subprocess.Popen([kube.binary, "get", "pods", "-w"], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, KUBECONFIG=kube.config))
    try:
        assert "scaled" in kube("scale", "rc", "web", "--replicas=3").stdout
        names = wait_for(lambda: (n := pod_names(kube)) and len(n) == 3 and n)
        wait_for(lambda: len(serving(kube, ip)) == 3, 30)        # packets reach all three
        assert serving(kube, ip) == set(names)
        time.sleep(1.0)
    finally:
        watch.terminate()
        seen = watch.communicate(timeout=10)[0]
    assert all(n in seen for n in names)                          # -w printed the new pod
    victim = names[0]
    assert f'pod "{victim}" deleted' in kube("delete", "pod", victim).stdout
    after = wait_for(lambda: (n := pod_names(kube)) and len(n) == 3 and victim not in n and n)
    assert set(after) - set(names)                                 # a replacement, with a new name
    assert "serving http" in kube("logs", after[0]).stdout
    kube("scale", "rc", "web", "--replicas=1")
    wait_for(lambda: len(pod_names(kube)) == 1)


def test_kubernetes_service_and_netlab_get(kube):
    lab = kube.cluster.name
    svc = json.loads(kube("get", "svc", "kubernetes", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.96.0.1" and svc["spec"]["ports"][0]["port"] == 443
    ep = json.loads(kube("get", "endpoints", "kubernetes", "-o", "json").stdout)
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["192.168.56.11", "192.168.56.12"]
    pod = pod_names(kube)[0]
    out = netlab("exec", "--lab", lab, pod, "--", "sh", "-c",
                 "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; "
                 "curl -sk https://10.96.0.1/version; echo; "
                 "curl -sk -o /dev/null -w '%{http_code}' -X DELETE https://10.96.0.1/api/v1/namespaces/default/pods/x"
                 ).stdout.splitlines()
    assert out[0] == "10.96.0.1:443"
    assert json.loads(out[1])["gitVersion"].startswith("v1.")
    assert out[2] == "403"                                         # anonymous: reads only
    ips = netlab("get", "pods", "--lab", lab, "-o", "jsonpath={.items[*].status.podIP}").stdout.split()
    assert ips and all(ip.startswith("10.244.") for ip in ips)
    listed = json.loads(netlab("get", "pods", "--lab", lab, "-o", "json").stdout)
    assert listed["kind"] == "List" and listed["items"][0]["apiVersion"] == "v1"
    cols = netlab("get", "pods", "--lab", lab, "-o", "custom-columns=NAME:.metadata.name,IP:.status.podIP").stdout
    assert cols.splitlines()[0].split() == ["NAME", "IP"]
    assert "app=web" in netlab("get", "pods", "--lab", lab, "--show-labels").stdout
    listed = json.loads(netlab("exec", "--lab", lab, pod, "--", "sh", "-c",
                               "curl -sk https://$KUBERNETES_SERVICE_HOST/api/v1/namespaces/default/pods").stdout)
    assert listed["kind"] == "PodList" and listed["items"]
    watching = subprocess.Popen([sys.executable, "-m", "netlab", "get", "pods", "--lab", lab, "--show-labels", "-w"],
                                stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        kube("label", "pod", pod, "seen=yes")
        time.sleep(1.5)
    finally:
        watching.terminate()
        seen = watching.communicate(timeout=10)[0]
    assert seen.splitlines()[0].split()[-1] == "LABELS" and "seen=yes" in seen   # the change, as a new row
