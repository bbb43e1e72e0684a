"""apps/v1 workloads in the model (no root): loading real manifests, the controllers' plans,
a rolling update simulated step by step, DaemonSet and StatefulSet placement."""
from __future__ import annotations

import copy
import re

import pytest

from netlab.model import workloads as W
from netlab.model.cluster import Cluster
from netlab.model.errors import LabError
from netlab.model.objects import parse_object

from .model_helpers import cluster

SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]"


def deploy_doc(name="web", replicas=3, image="netexec", surge=1, unavailable=0, **spec):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image,
                                                           "ports": [{"containerPort": 8080}]}]}},
                     **spec}}


def test_loads_a_real_deployment_and_names_pods_like_kube():
    c = cluster()
    added = c.admit([parse_object(deploy_doc(), "d.yaml")])
    kinds = [o.kind for o in added]
    assert kinds == ["Deployment", "ReplicaSet", "Pod", "Pod", "Pod"]
    rs = added[1]
    h = W.template_hash(added[0].raw_template)
    assert rs.meta.name == f"web-{h}" and rs.meta.labels[W.HASH_LABEL] == h
    assert rs.revision == 1 and rs.owner == "Deployment/web"
    for pod in added[2:]:
        assert re.fullmatch(f"web-{h}-{SUFFIX}{{5}}", pod.meta.name)
        assert pod.meta.labels == {"app": "web", W.HASH_LABEL: h}
        assert pod.owner == f"ReplicaSet/web-{h}"


def test_unknown_field_and_missing_selector_are_refused():
    doc = deploy_doc()
    doc["spec"]["strategy"]["rollingUpdate"]["maxSurgee"] = 1
    with pytest.raises(LabError, match='unknown field "spec.strategy.rollingUpdate.maxSurgee"'):
        parse_object(doc, "d.yaml")
    doc = deploy_doc()
    del doc["spec"]["selector"]
    with pytest.raises(LabError, match="spec.selector: Required value"):
        parse_object(doc, "d.yaml")
    with pytest.raises(LabError, match="may not be 0"):
        parse_object(deploy_doc(surge=0, unavailable=0), "d.yaml")


def test_state_round_trip_keeps_apps_objects():
    c = cluster()
    c.admit([parse_object(deploy_doc(), "d.yaml")])
    back = Cluster.from_state(c.to_state())
    assert sorted(back.apps) == sorted(c.apps)
    assert {p.owner for p in back.pods.values()} == {p.owner for p in c.pods.values()}


def _roll(c: Cluster, dep_doc: dict, rounds: int = 50):
    """Apply a new template, then run the controller with every pod available at once each
    round; record (old, new) pod counts and available counts after each step."""
    new = parse_object(dep_doc, "d.yaml")
    c.apps[new.ref] = new
    history = []
    for _ in range(rounds):
        ready = set(c.pods)
        actions = W.plan(c, ready, ready)
        if not actions:
            break
        W.act(c, actions, ready)
        history.append(len(c.pods))
    return history


def test_rolling_update_respects_max_surge_and_unavailable():
    c = cluster()
    c.admit([parse_object(deploy_doc(replicas=3), "d.yaml")])
    history = _roll(c, deploy_doc(replicas=3, image="netexec:2"))
    assert history and max(history) <= 3 + 1 and min(history) >= 3
    dep = c.apps["Deployment/default/web"]
    rss = W.owned_replicasets(c, dep)
    assert [rs.replicas for rs in rss] == [0, 3] and [rs.revision for rs in rss] == [1, 2]
    assert all(p.owner == f"ReplicaSet/{rss[1].meta.name}" for p in c.pods.values())
    assert W.rollout_done(c, dep, set(c.pods))[0]


def test_rolling_update_waits_for_availability():
    c = cluster()
    c.admit([parse_object(deploy_doc(replicas=2), "d.yaml")])
    old = set(c.pods)
    new = parse_object(deploy_doc(replicas=2, image="netexec:2"), "d.yaml")
    c.apps[new.ref] = new
    W.act(c, W.plan(c, old, old), old)            # creates the new ReplicaSet with 1 pod (surge 1)
    W.act(c, W.plan(c, old, old), old)
    assert len(c.pods) == 3
    for _ in range(3):                            # the new pod is not ready: nothing more happens
        assert W.plan(c, old, old) == []
    done, msg = W.rollout_done(c, new, old)
    assert not done and "1 out of 2 new replicas" in msg


def test_recreate_scales_old_to_zero_first():
    c = cluster()
    doc = deploy_doc(replicas=2)
    doc["spec"]["strategy"] = {"type": "Recreate"}
    c.admit([parse_object(doc, "d.yaml")])
    doc2 = copy.deepcopy(doc)
    doc2["spec"]["template"]["spec"]["containers"][0]["image"] = "netexec:2"
    history = _roll(c, doc2)
    assert 0 in history and history[-1] == 2


def test_undo_makes_the_old_replicaset_current_with_a_new_revision():
    c = cluster()
    c.admit([parse_object(deploy_doc(replicas=2), "d.yaml")])
    _roll(c, deploy_doc(replicas=2, image="netexec:2"))
    first = W.owned_replicasets(c, c.apps["Deployment/default/web"])[0]
    _roll(c, deploy_doc(replicas=2))
    rss = W.owned_replicasets(c, c.apps["Deployment/default/web"])
    assert rss[-1].meta.name == first.meta.name and rss[-1].revision == 3 and rss[-1].replicas == 2


def test_replicaset_on_its_own():
    c = cluster()
    doc = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "fe"},
           "spec": {"replicas": 2, "selector": {"matchExpressions": [
               {"key": "tier", "operator": "In", "values": ["frontend"]}]},
                    "template": {"metadata": {"labels": {"tier": "frontend"}},
                                 "spec": {"containers": [{"name": "c", "image": "netexec"}]}}}}
    added = c.admit([parse_object(doc, "rs.yaml")])
    assert [o.kind for o in added] == ["ReplicaSet", "Pod", "Pod"]
    rs = added[0]
    W.scale_replicaset(c, rs, 1, set())
    assert len(c.pods) == 1


def test_daemonset_one_pod_per_matching_node():
    c = cluster({"nodes": [{"name": "a", "labels": {"disk": "ssd"}}, {"name": "b"}, {"name": "c2", "labels": {"disk": "ssd"}}]})
    doc = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
           "spec": {"selector": {"matchLabels": {"app": "agent"}},
                    "template": {"metadata": {"labels": {"app": "agent"}},
                                 "spec": {"nodeSelector": {"disk": "ssd"},
                                          "containers": [{"name": "c", "image": "netexec"}]}}}}
    c.admit([parse_object(doc, "ds.yaml")])
    assert sorted(p.spec.node_name for p in c.pods.values()) == ["a", "c2"]
    assert W.plan(c, set(), set()) == []
    ds = c.apps["DaemonSet/default/agent"]
    c.nodes[1].labels["disk"] = "ssd"              # a node that now matches gets its pod
    W.act(c, W.plan(c, set(), set()), set())
    assert sorted(p.spec.node_name for p in c.pods.values()) == ["a", "b", "c2"]
    assert W.daemonset_status(c, ds, set())["desiredNumberScheduled"] == 3


def test_statefulset_in_order_with_stable_names():
    c = cluster()
    doc = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                                 "spec": {"containers": [{"name": "c", "image": "netexec"}]}}}}
    c.admit([parse_object(doc, "sts.yaml")])
    assert list(c.pods) == ["default/db-0"]
    pod = c.pods["default/db-0"]
    assert pod.spec.hostname == "db-0" and pod.spec.subdomain == "db"
    assert W.plan(c, set(), set()) == []           # db-0 not ready: db-1 waits
    ready = {"default/db-0"}
    W.act(c, W.plan(c, ready, ready), ready)
    assert sorted(c.pods) == ["default/db-0", "default/db-1"]
    ready = set(c.pods)
    W.act(c, W.plan(c, ready, ready), ready)
    assert sorted(c.pods) == ["default/db-0", "default/db-1", "default/db-2"]
    sts = c.apps["StatefulSet/default/db"]
    sts.replicas = 1
    W.act(c, W.plan(c, ready, ready), ready)
    assert "default/db-2" not in c.pods and "default/db-1" in c.pods


REAL = """
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    deployment.kubernetes.io/revision: "1"
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 1
  labels: {app: nginx}
  name: nginx
  namespace: default
  resourceVersion: "1234"
  uid: 5d2b1c62-8a0c-4c8e-9a53-0c6b7f0e2a11
spec:
  progressDeadlineSeconds: 600
  replicas: 2
  revisionHistoryLimit: 10
  selector:
    matchLabels: {app: nginx}
  strategy:
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
    type: RollingUpdate
  template:
    metadata:
      creationTimestamp: null
      labels: {app: nginx}
    spec:
      containers:
      - image: nginx:1.25
        imagePullPolicy: IfNotPresent
        name: nginx
        ports:
        - {containerPort: 80, protocol: TCP}
        resources: {}
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status:
  availableReplicas: 2
  observedGeneration: 1
  readyReplicas: 2
  replicas: 2
  updatedReplicas: 2
"""


def test_a_deployment_as_kubectl_get_prints_it_loads_unchanged():
    import yaml
    c = cluster()
    added = c.admit([parse_object(yaml.safe_load(REAL), "nginx.yaml")])
    dep = added[0]
    assert (dep.max_surge, dep.max_unavailable, dep.replicas) == ("25%", "25%", 2)
    assert W.scaled("25%", 2, True) == 1 and W.scaled("25%", 2, False) == 0
    assert len([o for o in added if o.kind == "Pod"]) == 2


def test_statefulset_and_daemonset_roll_a_new_template_one_pod_at_a_time():
    c = cluster()
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                                 "spec": {"containers": [{"name": "c", "image": "netexec"}]}}}}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ag"},
          "spec": {"selector": {"matchLabels": {"app": "ag"}},
                   "template": {"metadata": {"labels": {"app": "ag"}},
                                "spec": {"containers": [{"name": "c", "image": "netexec"}]}}}}
    c.admit([parse_object(sts, "s.yaml"), parse_object(ds, "d.yaml")])
    for _ in range(5):
        ready = set(c.pods)
        W.act(c, W.plan(c, ready, ready), ready)
    before = {k: p.uid for k, p in c.pods.items()}
    for doc in (sts, ds):
        doc = copy.deepcopy(doc)
        doc["spec"]["template"]["spec"]["containers"][0]["image"] = "netexec:2"
        new = parse_object(doc, "x.yaml")
        new.created = 1.0
        c.apps[new.ref] = new
    deleted_first = None
    for _ in range(20):
        ready = set(c.pods)
        actions = W.plan(c, ready, ready)
        if not actions:
            break
        assert sum(a[0] == "delete_pod" for a in actions if "db-" in str(a[1])) <= 1
        if deleted_first is None and any(a[0] == "delete_pod" and "db-" in a[1] for a in actions):
            deleted_first = next(a[1] for a in actions if a[0] == "delete_pod" and "db-" in a[1])
        W.act(c, actions, ready)
    assert deleted_first == "default/db-1"            # the highest ordinal first
    assert all(p.spec.containers[0].image == "netexec:2" for p in c.pods.values())
    assert sorted(k for k in c.pods if "db-" in k) == ["default/db-0", "default/db-1"]
    assert len([k for k in c.pods if "ag-" in k]) == 2 and not set(before) & {k for k in c.pods if "ag-" in k}


def test_pod_security_applies_to_templates():
    doc = deploy_doc()
    doc["spec"]["template"]["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    with pytest.raises(LabError, match="spec.template.spec.volumes"):
        parse_object(doc, "d.yaml")
