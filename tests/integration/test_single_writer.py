"""The agent is the lab's only writer: concurrent changes, refused changes, a stopped or dead
agent, and the Kubernetes-shaped API (issue 9, defects 1-4 and 8)."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from netlab import engine, state
from netlab.audit import audit
from netlab.kernel import iptables
from netlab.model.errors import InvalidError, LabError, NotFoundError, StateError
from netlab.model.loader import load_objects
from netlab.runtime import agent_client

from .netutil import web_lab_text

pytestmark = pytest.mark.root

LAB = web_lab_text()
EXTRA = """apiVersion: v1
kind: Service
metadata: {name: extra}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8080}]
"""
NETLAB = [sys.executable, "-m", "netlab"]


def _settled(lab: str, timeout: float = 30.0) -> dict:
    """The audit once every pod of the state runs and is ready (or the last one at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        cluster = engine.load(lab)
        pods = agent_client.live_status(lab)["pods"]
        ready = {k for k, st in pods.items() if st.get("ready")}
        found = audit(cluster, ready)
        if (ready == set(cluster.pods) == set(pods) and not any(found.values())) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def _nat_rules(cluster) -> dict:
    """Each node's nat rules as a sorted list (iptables-save's comment lines carry the time,
    and its chain lines the packet counters, which any new connection moves)."""
    return {n.name: sorted(re.sub(r" \[\d+:\d+\]$", "", line) for line in iptables.save(n.netns, "nat").splitlines()
                           if not line.startswith("#"))
            for n in cluster.nodes}


def test_parallel_changes_leave_no_orphans(make_lab, tmp_path):
    """Four loops of scale / delete pod / apply / delete svc at once: afterwards the kernel holds
    exactly what the state says (no orphan namespace or veth, no stale chain)."""
    lab = make_lab(manifests=LAB).name
    svc = tmp_path / "extra.yaml"
    svc.write_text(EXTRA)
    errors: list[str] = []
    deadline = time.monotonic() + 8

    def loop(seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < deadline:
            verb = rnd.choice(["scale", "delete-pod", "apply", "delete-svc"])
            try:
                if verb == "scale":
                    engine.scale(lab, "web", rnd.randint(1, 5))
                elif verb == "delete-pod":
                    web = [k.split("/", 1)[1] for k in engine.load(lab).pods if k.startswith("default/web-")]
                    if web:
                        engine.delete(lab, "pods", rnd.choice(web))
                elif verb == "apply":
                    engine.apply(lab, load_objects(svc))
                else:
                    engine.delete(lab, "services", "extra")
            except NotFoundError:
                pass                      # another loop deleted it first: a correct answer
            except Exception as exc:      # noqa: BLE001 - collected and asserted below
                errors.append(f"{verb}: {exc}")

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    found = _settled(lab)
    assert found == {k: [] for k in found}
    cluster = engine.load(lab)
    rc = cluster.rcs["default/web"]
    assert len(cluster.rc_pods(rc)) == rc.replicas


def test_scale_persists_the_replica_count(make_lab):
    """Defect 3: after `scale --replicas 4`, a deleted pod is replaced up to 4, not the manifest's 2."""
    lab = make_lab(manifests=LAB).name
    proc = subprocess.run([*NETLAB, "scale", "rc", "web", "--replicas", "4", "--lab", lab],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    victim = sorted(k for k in engine.load(lab).pods if k.startswith("default/web-"))[0]
    engine.delete(lab, "pods", victim.split("/", 1)[1])
    cluster = engine.load(lab)
    assert cluster.rcs["default/web"].replicas == 4
    assert len(cluster.rc_pods(cluster.rcs["default/web"])) == 4
    assert victim not in cluster.pods
    saved = state.read_json(state.state_file(lab))
    rc_doc = next(o for o in saved["objects"] if o["kind"] == "ReplicationController")
    assert rc_doc["spec"]["replicas"] == 4


def test_refused_apply_changes_nothing(make_lab, tmp_path):
    """Defect 4: a Service that cannot become rules is refused; state and rules stay as they were,
    and the next change goes through."""
    lab = make_lab(manifests=LAB).name
    _settled(lab)
    cluster = engine.load(lab)
    before_state = state.state_file(lab).read_bytes()
    before_rules = _nat_rules(cluster)
    # Sent as a client that skipped local validation would: the agent must refuse it itself.
    bad = yaml.safe_load(EXTRA)
    bad["spec"]["externalIPs"] = ["not-an-ip"]
    with pytest.raises(LabError) as err:
        agent_client.call(lab, "POST", "/apis/netlab.io/v1/apply", {"kind": "List", "items": [bad]})
    assert "\n" not in str(err.value)
    assert state.state_file(lab).read_bytes() == before_state
    assert _nat_rules(cluster) == before_rules
    good = tmp_path / "good.yaml"
    good.write_text(EXTRA)
    assert engine.apply(lab, load_objects(good)) == ["service/extra created"]
    assert "default/extra" in engine.load(lab).services


def test_api_speaks_kubernetes_status(make_lab):
    """POST of an existing object is 409 AlreadyExists, PUT of a missing one 404, a bad field 422."""
    lab = make_lab(manifests=LAB).name
    svc = engine.api_manifest(engine.load(lab).services["default/web"])
    svc["metadata"]["annotations"] = {}
    raw = agent_client._exchange(lab, agent_client.api.encode_request(
        "POST", "/api/v1/namespaces/default/services", svc), 30)
    code, status = agent_client.api.parse_response(raw)
    assert (code, status["kind"], status["reason"]) == (409, "Status", "AlreadyExists")
    missing = dict(svc, metadata={"name": "nothere", "namespace": "default"})
    with pytest.raises(NotFoundError):
        agent_client.call(lab, "PUT", "/api/v1/namespaces/default/services/nothere", missing)
    bad = dict(svc, metadata={"name": "bad", "namespace": "default"},
               spec=dict(svc["spec"], ports=[{"port": 70000}]))
    with pytest.raises(InvalidError) as err:
        agent_client.call(lab, "POST", "/api/v1/namespaces/default/services", bad)
    assert "spec.ports[0].port" in str(err.value)
    pods = agent_client.call(lab, "GET", "/api/v1/namespaces/default/pods")
    assert pods["kind"] == "PodList" and len(pods["items"]) == 2
    assert all(p["status"]["podIP"] and p["metadata"]["uid"] for p in pods["items"])
    scale = agent_client.call(lab, "GET", "/api/v1/namespaces/default/replicationcontrollers/web/scale")
    assert scale["spec"]["replicas"] == 2


def test_stopped_agent_is_reported_not_waited_on(make_lab):
    """Defect 8: a SIGSTOPped agent shows as stopped, and changes refuse at once with advice."""
    lab = make_lab(manifests=LAB).name
    pid = agent_client.agent_pid(lab)
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5        # the signal takes effect when the kernel delivers it
        while agent_client.agent_state(lab)[0] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent_client.agent_state(lab) == ("stopped", pid)
        proc = subprocess.run([*NETLAB, "status", "--lab", lab], capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and "stopped" in proc.stdout
        started = time.monotonic()
        with pytest.raises(StateError, match="stopped"):
            engine.scale(lab, "web", 3)
        assert time.monotonic() - started < 5
    finally:
        os.kill(pid, signal.SIGCONT)
    assert engine.scale(lab, "web", 3) == "replicationcontroller/web scaled"


def test_dead_agent_refuses_changes_and_pid_acts(make_lab):
    """Defects 1 and 8: with the agent dead, scale and fault kill refuse with one line pointing at
    `netlab agent restart`, and nothing is written."""
    lab = make_lab(manifests=LAB).name
    os.kill(agent_client.agent_pid(lab), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while agent_client.agent_state(lab)[0] != "gone" and time.monotonic() < deadline:
        time.sleep(0.05)
    before = state.state_file(lab).read_bytes()
    for argv in (["scale", "rc", "web", "--replicas", "3"],
                 ["fault", "kill", next(iter(engine.load(lab).pods)).split("/", 1)[1]]):
        proc = subprocess.run([*NETLAB, *argv, "--lab", lab], capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0, argv
        assert "netlab agent restart" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert state.state_file(lab).read_bytes() == before


def test_readme_api_command_runs(make_lab):
    """Docs are code: the README's curl against the agent's socket lists the lab's pods."""
    import json
    import re
    from pathlib import Path
    lab = make_lab(manifests=LAB).name
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    command = re.search(r"^sudo (curl .*agent\.sock.*)$", readme, re.M).group(1)
    command = command.replace("/run/netlab/guestbook/", f"{state.lab_dir(lab)}/")
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    pods = json.loads(proc.stdout)
    assert pods["kind"] == "PodList"
    assert sorted(p["metadata"]["name"] for p in pods["items"]) == sorted(
        k.split("/", 1)[1] for k in engine.load(lab).pods)
