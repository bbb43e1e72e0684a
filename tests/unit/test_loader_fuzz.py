"""Property-based fuzzing of the manifest loader: whatever a lab directory holds, the loader
either builds a lab or raises LabError, whose text is ONE line of bounded length. No other
exception, no traceback, ever.

Documents are generated three ways: valid Pods, RCs, Services, Namespaces, Lists and lab.yaml
mutated at random paths; structure-aware random documents whose keys come from the real
Kubernetes field names (netlab/model/schema.py) and random ones; and raw YAML-ish text. A lab
that loads is also saved and reloaded (state.json) and its kube-proxy rules and DNS records
are rendered, which must not fail either and must not carry a user's control character.

Runs NETLAB_FUZZ_EXAMPLES examples per property (default 1000, two properties: about 10 s).
A long run:

    NETLAB_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/unit/test_loader_fuzz.py
"""
from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

from netlab.model import schema  # noqa: E402
from netlab.model.cluster import Cluster  # noqa: E402
from netlab.model.errors import LINE_MAX, LabError  # noqa: E402
from netlab.model.loader import load_lab  # noqa: E402

EXAMPLES = int(os.environ.get("NETLAB_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                suppress_health_check=list(HealthCheck))


def _all_field_names(table, out: set) -> set:
    if isinstance(table, schema.Each):
        return _all_field_names(table.item, out)
    if isinstance(table, dict):
        for key, sub in table.items():
            out.add(key)
            _all_field_names(sub, out)
    return out


FIELD_NAMES = sorted(_all_field_names(schema.KIND_SCHEMAS, set()) | _all_field_names(schema.LIST, set())
                     | {"nodes", "backend", "proxyMode", "dns", "network", "clusterCIDR",
                        "nodeSubnetPrefix", "serviceCIDR", "dnsServiceIP", "dnsDomain",
                        "underlayCIDR", "nodeIPOffset", "nodePortRange", "loadBalancerPool",
                        "internetCIDR", "mtu", "vxlanVNI", "vxlanPort", "matchLabels",
                        "matchExpressions", "key", "operator", "values", "controller"})
INTERESTING = ["", "v1", "netlab/v1", "Pod", "Service", "ReplicationController", "Namespace", "List",
               "Lab", "TCP", "UDP", "SCTP", "None", "ClientIP", "NodePort", "LoadBalancer",
               "ClusterIP", "http", "web", "app", "default", "kube-system", "node1", "node2",
               "10.96.0.10", "10.96.0.99", "10.244.1.5", "198.51.100.3", "203.0.113.7", "0.0.0.0",
               "127.0.0.1", "1.2.3.4/24", "abc", "not-an-ip", "fd00::1", "10.244.0.0/16", "30080",
               "80", "8080", "a\nb", "x\x00y", "Always", "Never", "ClusterFirst", "Default", "/",
               "In", "NotIn", "Exists", "DoesNotExist", "30000-32767", "host-gw", "vxlan",
               "userspace", "iptables", "netexec", "a" * 70, "a" * 300]

keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12), st.integers(-3, 3), st.none())
scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INTERESTING),
    st.integers(-5, 70000), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=10)


def dump(docs) -> str:
    return yaml.dump_all(docs, Dumper=DUMPER, sort_keys=False)


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web", "labels": {"app": "web"}, "namespace": "default"},
       "spec": {"hostname": "web", "subdomain": "sub", "nodeSelector": {},
                "containers": [{"name": "c", "image": "netexec", "command": ["netexec"],
                                "args": ["--http-port=8080"],
                                "env": [{"name": "A", "value": "1"}],
                                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                                "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                   "periodSeconds": 5},
                                "livenessProbe": {"tcpSocket": {"port": 8080}}}]}}
RC = {"apiVersion": "v1", "kind": "ReplicationController",
      "metadata": {"name": "fe"},
      "spec": {"replicas": 2, "selector": {"app": "fe"},
               "template": {"metadata": {"labels": {"app": "fe"}},
                            "spec": {"containers": [{"name": "c", "image": "netexec",
                                                     "ports": [{"containerPort": 80, "name": "http"}]}]}}}}
SVC = {"apiVersion": "v1", "kind": "Service",
       "metadata": {"name": "fe"},
       "spec": {"type": "LoadBalancer", "selector": {"app": "fe"}, "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "externalIPs": ["203.0.113.20"], "loadBalancerSourceRanges": ["0.0.0.0/0"],
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
                           "nodePort": 30080}]}}
NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
LAB = {"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": "fuzz"},
       "spec": {"nodes": [{"name": "node1", "labels": {"zone": "a"}}, "node2"], "backend": "vxlan",
                "proxyMode": "iptables", "dns": False,
                "network": {"clusterCIDR": "10.244.0.0/16", "nodeSubnetPrefix": 24,
                            "serviceCIDR": "10.96.0.0/12", "dnsServiceIP": "10.96.0.10",
                            "nodePortRange": "30000-32767", "loadBalancerPool": "198.51.100.0/28"}}}
BASES = [POD, RC, SVC, NS, LAB, {"apiVersion": "v1", "kind": "List", "items": [POD, SVC]}]


def _mutate(draw, doc, changes: int) -> None:
    """Walk down random paths of doc's containers and set, delete or add something there."""
    for _ in range(changes):
        node = doc
        for _ in range(draw(st.integers(0, 6))):
            children = (list(node.items()) if isinstance(node, dict)
                        else list(enumerate(node)) if isinstance(node, list) else [])
            children = [(k, v) for k, v in children if isinstance(v, (dict, list))]
            if not children:
                break
            node = draw(st.sampled_from(children))[1]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        new = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 70000), scalars, values))
        if isinstance(node, dict):
            if action == "delete" and node:
                node.pop(draw(st.sampled_from(list(node))))
            elif action == "set" and node:
                node[draw(st.sampled_from(list(node)))] = new
            else:
                node[draw(keys)] = new
        elif isinstance(node, list):
            if action == "delete" and node:
                node.pop(draw(st.integers(0, len(node) - 1)))
            elif action == "set" and node:
                node[draw(st.integers(0, len(node) - 1))] = new
            else:
                node.append(new)


@st.composite
def mutated(draw):
    """A valid document with a few random changes at random places."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    _mutate(draw, doc, draw(st.integers(1, 4)))
    return doc


@st.composite
def mutated_lab(draw):
    """A whole valid lab (Pod, RC, Service, Namespace, lab.yaml) with 0-3 changes in it: these
    get furthest, through admission into saving and rule rendering."""
    docs = copy.deepcopy(BASES[:5])
    for _ in range(draw(st.integers(0, 3))):
        _mutate(draw, draw(st.sampled_from(docs)), 1)
    return docs


@st.composite
def random_object(draw):
    """A document shaped like an object: a kind, an apiVersion, metadata, spec, anything."""
    doc = {"apiVersion": draw(st.one_of(st.sampled_from(["v1", "netlab/v1"]), scalars)),
           "kind": draw(st.one_of(st.sampled_from(["Pod", "Service", "ReplicationController",
                                                   "Namespace", "List", "Lab"]), values)),
           "metadata": draw(st.one_of(st.fixed_dictionaries(
               {"name": st.one_of(st.sampled_from(["a", "web", "x" * 300]), scalars)},
               optional={"labels": values, "namespace": scalars, "annotations": values}), values))}
    if draw(st.booleans()):
        doc["spec"] = draw(values)
    if draw(st.booleans()):
        doc.update(draw(st.dictionaries(keys, values, max_size=3)))
    return doc


yamlish = st.text(alphabet="[]{}:-&*!|>'\"#,?%@` \n\tab01.\\xyz", max_size=120)
manifest_text = st.one_of(
    st.lists(st.one_of(mutated(), random_object(), values), min_size=1, max_size=4).map(
        dump),
    yamlish,
    st.text(max_size=200),
    st.builds(lambda a, b: a + b, st.lists(st.one_of(mutated(), random_object()), min_size=1, max_size=3)
              .map(dump), yamlish),
)

RULE_LINE = re.compile(r"^(\*(filter|nat)|:[A-Z][-A-Z0-9]* |-A |-X |COMMIT$|#)")


def _event(name: str) -> None:
    """Count outcomes (pytest --hypothesis-show-statistics); a no-op outside a property."""
    try:
        event(name)
    except hypothesis.errors.InvalidArgument:
        pass


@pytest.fixture(scope="module")
def lab_dir():
    # One directory for every example (on tmpfs where there is one): creating and removing a
    # directory per example costs more than the loading it tests.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="netlab-fuzz-", dir=shm) as tmp:
        yield Path(tmp)


def check_loads_or_refuses_in_one_line(lab_dir: Path, texts: list[str]) -> None:
    for old in lab_dir.iterdir():
        old.unlink()
    for i, text in enumerate(texts):
        (lab_dir / f"m{i}.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cluster = load_lab(lab_dir, addons=False, seed=1)
    except LabError as exc:
        line = str(exc)
        assert "\n" not in line and "\r" not in line, repr(line)
        assert 0 < len(line) <= LINE_MAX, len(line)
        _event("refused: " + ("YAML" if ": invalid YAML: " in line or ": refused: " in line
                             else "unknown field" if "unknown field" in line else "invalid value"))
        return
    _event("loaded")
    # What was admitted must save, reload, and render without a user's control character.
    state = json.loads(json.dumps(cluster.to_state()))
    again = Cluster.from_state(state)
    assert sorted(again.pods) == sorted(cluster.pods)
    from netlab.model.dns import build_records
    from netlab.plan.kubeproxy import render_node_rules
    build_records(cluster)
    for node in cluster.nodes:
        for line in render_node_rules(cluster, node).splitlines():
            assert RULE_LINE.match(line), line


@FUZZ
@given(st.lists(manifest_text, min_size=1, max_size=3))
def test_loader_only_ever_raises_one_line_lab_errors(lab_dir, texts):
    check_loads_or_refuses_in_one_line(lab_dir, texts)


@FUZZ
@given(mutated_lab())
def test_mutated_valid_labs(lab_dir, docs):
    check_loads_or_refuses_in_one_line(lab_dir, [dump(docs)])


def test_the_bases_load(tmp_path):
    """The generators start from documents that are valid together."""
    (tmp_path / "m.yaml").write_text(dump(BASES[:5]))
    cluster = load_lab(tmp_path, addons=False, seed=1)
    assert len(cluster.pods) == 3 and len(cluster.services) == 1
    check_loads_or_refuses_in_one_line(tmp_path, [dump(BASES[:5])])
