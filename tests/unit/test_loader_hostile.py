"""Hostile and wrong manifests: each is refused with ONE short line naming file, object, field.

Regression tests for issue 9 (defects 4, 6 and 7): YAML bombs, deep nesting, wrong types that
used to raise tracebacks, unknown fields that were silently dropped, values that reached
/etc/hosts or iptables rules unchecked, and the IPAM message that named nothing.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from netlab.model import loader
from netlab.model.errors import ECHO_MAX, LINE_MAX, PART_MAX, InvalidError, LabError, one_line
from netlab.model.loader import load_lab as _load_lab, load_objects
from netlab.model.objects import parse_object

from .model_helpers import check_error, cluster, parse, pod_doc, rc_doc, svc_doc

F = "hostile.yaml"


def load_lab(path, **kw):
    return _load_lab(path, addons=False, **kw)


def one_line_error(func) -> str:
    with pytest.raises(LabError) as info:
        func()
    text = str(info.value)
    assert "\n" not in text and "\r" not in text, text
    assert len(text) <= LINE_MAX, len(text)
    return text


def load_text(tmp_path: Path, text: str, name: str = "m.yaml") -> str:
    (tmp_path / name).write_text(text)
    return one_line_error(lambda: load_lab(tmp_path))


def bad(doc, obj, field, *fragments, file=F) -> str:
    with pytest.raises(LabError) as info:
        parse_object(doc, file)
    return check_error(info.value, file, obj, field, *fragments)


# ------------------------------------------------------------------- YAML bombs and limits

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, n in zip("abcdefgh", "bcdefghi"))


def test_billion_laughs_is_refused_quickly_in_one_line(tmp_path):
    assert len(LAUGHS) < 500
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    text = load_text(tmp_path, LAUGHS)
    assert time.monotonic() - start < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000     # KiB
    assert text.startswith(str(tmp_path / "m.yaml") + ": refused: line ")
    assert f"more than {loader.MAX_NODES} YAML nodes" in text


def test_billion_laughs_in_labels_is_refused(tmp_path):
    doc = LAUGHS.replace("a: &a", "x0: &a").replace("\n", "\n", 1)
    text = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n"
            + "".join("    " + line + "\n" for line in doc.splitlines())
            + "spec: {containers: [{name: c}]}\n")
    out = load_text(tmp_path, text)
    assert "refused" in out and len(out) < 300


def test_too_many_aliases(tmp_path):
    text = "a: &x 1\nb: [" + ", ".join(["*x"] * (loader.MAX_ALIASES + 1)) + "]\n"
    assert f"more than {loader.MAX_ALIASES} YAML aliases" in load_text(tmp_path, text)


def test_a_few_aliases_are_fine(tmp_path):
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: &l {app: web}}\n"
            "spec: {nodeSelector: {}, containers: [{name: c}]}\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
            "spec: {selector: {app: web}, ports: [{port: 80}]}\n")
    (tmp_path / "m.yaml").write_text(text)
    assert list(load_lab(tmp_path).pods) == ["default/p"]


def test_recursive_alias(tmp_path):
    assert "recursive" in load_text(tmp_path, "a: &x [1, *x]\n")


def test_deep_nesting_is_one_line_not_a_traceback(tmp_path):
    text = load_text(tmp_path, "[" * 20000 + "]" * 20000)
    assert text.startswith(str(tmp_path / "m.yaml") + ": refused: ")
    assert f"nested deeper than {loader.MAX_DEPTH} levels" in text


def test_deep_mapping_nesting(tmp_path):
    assert "nested deeper" in load_text(tmp_path, "{a: " * 5000 + "1" + "}" * 5000)


def test_file_size_limit(tmp_path):
    (tmp_path / "big.yaml").write_bytes(b"# " + b"x" * loader.MAX_FILE_BYTES)
    text = one_line_error(lambda: load_lab(tmp_path))
    assert str(tmp_path / "big.yaml") in text and "4 MiB" in text and "too large" in text


def test_constructor_errors_are_one_line(tmp_path):
    assert "invalid YAML" in load_text(tmp_path, "a: 2020-13-45\n")
    assert "invalid YAML" in load_text(tmp_path, "a: !!int 'abc'\n")
    assert "invalid YAML" in load_text(tmp_path, "a: !!python/object:os.system {}\n")
    assert "invalid YAML" in load_text(tmp_path, "? [a]\n: 1\n")


# --------------------------------------------------------------- wrong types, no traceback

@pytest.mark.parametrize("mutate,field,fragment", [
    (lambda d: d.update(kind=["Pod"]), "kind", "must be a string"),
    (lambda d: d.update(kind={"a": 1}), "kind", "must be a string"),
    (lambda d: d.update(metadata=["web"]), "metadata", "must be a mapping"),
    (lambda d: d["metadata"].update(labels={1: "a"}), "metadata.labels", "label keys must be strings"),
    (lambda d: d["metadata"].update(labels={None: "x"}), "metadata.labels", "label keys must be strings"),
    (lambda d: d["metadata"].update(labels={"a": ["x"] * 1000}), "metadata.labels[a]", "must be a string"),
    (lambda d: d["metadata"].update(labels={"a": "x y"}), "metadata.labels[a]", "a valid label"),
    (lambda d: d["metadata"].update(labels={"-a": "x"}), "metadata.labels[-a]", "name part"),
    (lambda d: d["metadata"].update(annotations={"a": {"b": 1}}), "metadata.annotations[a]",
     "must be a string"),
    (lambda d: d["metadata"].update(name=["x"]), "metadata.name", "must be a string"),
    (lambda d: d["metadata"].update(ownerReferences=[["x"]]), "metadata.ownerReferences[0]",
     "must be a mapping"),
    (lambda d: d["spec"].update(nodeSelector={"zone": {"a": 1}}), "spec.nodeSelector[zone]",
     "must be a string"),
    (lambda d: d["spec"]["containers"][0].update(readinessProbe={"tcpSocket": {"port": 8080},
                                                                 "initialDelaySeconds": 10 ** 30}),
     "spec.containers[0].readinessProbe.initialDelaySeconds", "less than or equal to 2147483647"),
    (lambda d: d["spec"].update(containers=[{"name": "c", "env": [{"name": ["A"]}]}]),
     "spec.containers[0].env[0].name", "must be a string"),
])
def test_wrong_types_are_invalid_errors(mutate, field, fragment):
    doc = pod_doc("web")
    mutate(doc)
    md = doc["metadata"] if isinstance(doc["metadata"], dict) else {}
    kind = doc["kind"] if isinstance(doc["kind"], str) else "?"
    obj = f"{kind}/{md['name'] if isinstance(md.get('name'), str) else '?'}"
    bad(doc, obj, field, fragment)


def test_huge_values_are_echoed_short():
    doc = pod_doc("web")
    doc["spec"]["containers"][0]["name"] = "X" * 100_000
    text = bad(doc, "Pod/web", "spec.containers[0].name", "Invalid value: ")
    echoed = text.split("Invalid value: ", 1)[1].split(": ", 1)[0]
    assert len(echoed) <= ECHO_MAX and "..." in echoed


def test_newlines_in_file_names_and_keys_do_not_break_the_line():
    doc = pod_doc("web")
    doc["spec"]["bogus\nfield"] = 1
    with pytest.raises(LabError) as info:
        parse_object(doc, "evil\nfile.yaml")
    text = str(info.value)
    assert "\n" not in text and "evil\\nfile.yaml" in text and "bogus\\nfield" in text


def test_load_balancer_ip_abc_is_refused_at_parse():
    bad(svc_doc("web", type="LoadBalancer", loadBalancerIP="abc"), "Service/web", "spec.loadBalancerIP",
        "Invalid value: 'abc': must be a valid IP address")


def test_list_with_bad_items_or_fields(tmp_path):
    assert "List: items: Invalid value: 5: must be a list" in load_text(tmp_path, "apiVersion: v1\nkind: List\nitems: 5\n")
    assert 'List: unknown field "itemz"' in load_text(tmp_path, "apiVersion: v1\nkind: List\nitemz: []\n")


# ------------------------------------------------------------------------ unknown fields

@pytest.mark.parametrize("mutate,path,hint", [
    (lambda d: d["spec"]["containers"][0].update(readinesProbe={}), "spec.containers[0].readinesProbe",
     "readinessProbe"),
    (lambda d: d["spec"].update(nodeSelectr={"a": "b"}), "spec.nodeSelectr", "nodeSelector"),
    (lambda d: d.update(specs={}), "specs", "spec"),
    (lambda d: d["metadata"].update(label={}), "metadata.label", "labels"),
    (lambda d: d["spec"]["containers"][0]["ports"][0].update(containerport=80),
     "spec.containers[0].ports[0].containerport", "containerPort"),
    (lambda d: d["spec"]["containers"][0].update(env=[{"name": "A", "vaule": "1"}]),
     "spec.containers[0].env[0].vaule", "value"),
    (lambda d: d["spec"]["containers"][0].update(livenessProbe={"httpGet": {"port": 80, "pth": "/"}}),
     "spec.containers[0].livenessProbe.httpGet.pth", "path"),
    (lambda d: d["spec"].update({1: 2}), "spec.1", None),
])
def test_unknown_pod_fields_are_refused(mutate, path, hint):
    doc = pod_doc("web")
    mutate(doc)
    text = bad(doc, "Pod/web", None, f'unknown field "{path}"')
    if hint:
        assert f'(did you mean "{hint}"?)' in text


def test_unknown_service_and_rc_fields():
    bad(svc_doc("web", sessionAfinity="ClientIP"), "Service/web", None,
        'unknown field "spec.sessionAfinity"', '"sessionAffinity"')
    bad(svc_doc("web", ports=[{"port": 80, "targetport": 8080}]), "Service/web", None,
        'unknown field "spec.ports[0].targetport"')
    doc = rc_doc("web")
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    bad(doc, "ReplicationController/web", None,
        'unknown field "spec.template.spec.containers[0].imagePullPolicyy"')
    doc = rc_doc("web")
    doc["spec"]["replica"] = 3
    bad(doc, "ReplicationController/web", None, 'unknown field "spec.replica"', '"replicas"')
    bad({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizer": []}},
        "Namespace/x", None, 'unknown field "spec.finalizer"')


KUBECTL_GET_POD = """\
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{},"name":"web","namespace":"default"}}
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 1
  labels: {app: web, version: "1"}
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1: {f:spec: {}}
    manager: kubectl-client-side-apply
    operation: Update
    time: "2024-05-01T10:00:00Z"
  name: web
  namespace: default
  resourceVersion: "12345"
  uid: 0b6c7a7e-5b0e-4c57-9a0a-6a3a5e2d1f00
spec:
  containers:
  - image: registry.k8s.io/e2e-test-images/agnhost:2.39
    imagePullPolicy: IfNotPresent
    name: web
    args: [netexec, --http-port=8080]
    ports:
    - {containerPort: 8080, name: http, protocol: TCP}
    readinessProbe:
      httpGet: {path: /healthz, port: http, scheme: HTTP}
      failureThreshold: 3
      periodSeconds: 10
      successThreshold: 1
      timeoutSeconds: 1
    resources: {limits: {cpu: 100m}, requests: {cpu: 50m, memory: 64Mi}}
    securityContext: {allowPrivilegeEscalation: false}
    startupProbe: {tcpSocket: {port: 8080}}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    volumeMounts:
    - {mountPath: /cache, name: cache}
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
  dnsPolicy: ClusterFirst
  enableServiceLinks: true
  nodeName: node1
  preemptionPolicy: PreemptLowerPriority
  priority: 0
  restartPolicy: Always
  schedulerName: default-scheduler
  securityContext: {}
  serviceAccount: default
  serviceAccountName: default
  terminationGracePeriodSeconds: 30
  tolerations:
  - {effect: NoExecute, key: node.kubernetes.io/not-ready, operator: Exists, tolerationSeconds: 300}
  affinity: {nodeAffinity: {}}
  volumes:
  - {name: cache, emptyDir: {sizeLimit: 64Mi}}
status:
  conditions: [{type: Ready, status: "True"}]
  hostIP: 192.168.56.11
  phase: Running
  podIP: 10.244.1.7
  podIPs: [{ip: 10.244.1.7}]
  qosClass: Burstable
  startTime: "2024-05-01T10:00:00Z"
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, creationTimestamp: null, resourceVersion: "1"}
spec:
  clusterIP: 10.96.0.50
  clusterIPs: [10.96.0.50]
  internalTrafficPolicy: Cluster
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  externalTrafficPolicy: Cluster
  ports: [{name: http, port: 80, protocol: TCP, targetPort: http, nodePort: 30080}]
  selector: {app: web}
  sessionAffinity: None
  type: NodePort
status: {loadBalancer: {}}
"""


def test_a_manifest_copied_from_a_real_cluster_loads_unchanged(tmp_path):
    (tmp_path / "web.yaml").write_text(KUBECTL_GET_POD)
    c = load_lab(tmp_path)
    pod = c.pod("web")
    assert pod.spec.containers[0].readiness_probe.port == "http"
    assert pod.meta.labels == {"app": "web", "version": "1"}
    assert c.service("web").cluster_ip == "10.96.0.50"


def test_unknown_lab_fields(tmp_path):
    from netlab.model.config import parse_lab
    for doc, field in [
        ({"apiVersion": "netlab/v1", "kind": "Lab", "spce": {}}, "spce"),
        ({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"nam": "x"}}, "metadata.nam"),
        ({"apiVersion": "netlab/v1", "kind": "Lab", "spec": {"nodes": [{"name": "a", "label": {}}]}},
         "spec.nodes[0].label"),
    ]:
        with pytest.raises(InvalidError) as info:
            parse_lab(doc, default_name="x", file="lab.yaml")
        check_error(info.value, "lab.yaml", "Lab", field, "unknown field")


def test_lab_wrong_types(tmp_path):
    from netlab.model.config import parse_lab
    for spec, field in [({"nodes": [{"name": ["a"]}]}, "spec.nodes[0].name"),
                        ({"nodes": [{"name": "a", "labels": {1: "x"}}]}, "spec.nodes[0].labels"),
                        ({"nodes": [{"name": "a", "labels": {"k": ["x"]}}]}, "spec.nodes[0].labels[k]")]:
        with pytest.raises(InvalidError) as info:
            parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "spec": spec}, default_name="x",
                      file="lab.yaml")
        check_error(info.value, "lab.yaml", "Lab", field)
    with pytest.raises(InvalidError) as info:
        parse_lab({"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": [1]}},
                  default_name="x", file="lab.yaml")
    check_error(info.value, "lab.yaml", "Lab", "metadata.name", "must be a string")


# ------------------------------------------------- values that reach files, rules, processes

@pytest.mark.parametrize("spec,field,fragment", [
    ({"hostname": "web\n10.0.0.1 evil"}, "spec.hostname", "control characters"),
    ({"hostname": "a" * 64}, "spec.hostname", "no more than 63"),
    ({"hostname": "Web"}, "spec.hostname", "RFC 1123 label"),
    ({"subdomain": "a.b"}, "spec.subdomain", "RFC 1123 label"),
])
def test_hostname_and_subdomain_are_dns_labels(spec, field, fragment):
    bad(pod_doc("web", **spec), "Pod/web", field, fragment)


@pytest.mark.parametrize("container,field,fragment", [
    ({"name": "c", "env": [{"name": "1ABC", "value": "x"}]}, "env[0].name", "environment variable name"),
    ({"name": "c", "env": [{"name": "A=B", "value": "x"}]}, "env[0].name", "environment variable name"),
    ({"name": "c", "env": [{"name": "A", "value": "x\x00y"}]}, "env[0].value", "NUL"),
    ({"name": "c", "command": ["sh", "-c", "a\x00"]}, "command[2]", "NUL"),
    ({"name": "c", "args": ["\x00"]}, "args[0]", "NUL"),
    ({"name": "c", "image": "netexec\nx"}, "image", "control characters"),
    ({"name": "C"}, "name", "RFC 1123 label"),
    ({"name": "c" * 64}, "name", "no more than 63"),
    ({"name": "c", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 81, "name": "http"}]},
     "ports[1].name", "Duplicate value"),
    ({"name": "c", "ports": [{"containerPort": 80, "protocol": "ICMP"}]}, "ports[0].protocol", "supported"),
    ({"name": "c", "ports": [{"containerPort": 80, "name": "http\n"}]}, "ports[0].name", "control"),
    ({"name": "c", "ports": [{"containerPort": 80}],
      "readinessProbe": {"httpGet": {"port": 80, "path": "/x\r\nHost: evil"}}},
     "readinessProbe.httpGet.path", "control characters"),
])
def test_container_values_that_reach_processes_and_files(container, field, fragment):
    bad(pod_doc("web", containers=[container]), "Pod/web", f"spec.containers[0].{field}", fragment)


def test_multiline_env_values_and_args_are_fine():
    pod = parse(pod_doc("web", containers=[{"name": "c", "args": ["sh", "-c", "a\nb"],
                                            "env": [{"name": "my.var-1", "value": "x\ny"}]}]))
    assert pod.spec.containers[0].env == [("my.var-1", "x\ny")]


def test_names_too_long_for_log_files():
    ns = "n" * 63
    long_pod = pod_doc("p" * 140, namespace=ns, containers=[{"name": "c" * 63}])
    bad(long_pod, f"Pod/{'p' * 140}", "metadata.name", "log file name", "255")
    parse(pod_doc("p" * 120, namespace=ns, containers=[{"name": "c" * 63}]))      # 255 bytes: fits


def test_rc_names_that_would_make_invalid_pod_names():
    doc = rc_doc("r" * 250, labels={"app": "web"})
    bad(doc, one_line("ReplicationController/" + "r" * 250, PART_MAX), "metadata.name",
        "no more than 247")
    doc = rc_doc("r" * 180, labels={"app": "web"})
    doc["metadata"]["namespace"] = "n" * 63
    bad(doc, one_line("ReplicationController/" + "r" * 180, PART_MAX), "metadata.name", "log file name")


@pytest.mark.parametrize("spec,field,fragment", [
    ({"externalIPs": ["not-an-ip"]}, "spec.externalIPs[0]", "must be a valid IP address"),
    ({"externalIPs": ["127.0.0.1"]}, "spec.externalIPs[0]", "loopback"),
    ({"externalIPs": ["0.0.0.0"]}, "spec.externalIPs[0]", "unspecified"),
    ({"externalIPs": ["203.0.113.9 -j ACCEPT"]}, "spec.externalIPs[0]", "valid IP"),
    ({"externalIPs": "1.2.3.4"}, "spec.externalIPs", "must be a list"),
    ({"loadBalancerIP": "1.2.3.4\n"}, "spec.loadBalancerIP", "control characters"),
    ({"clusterIP": "10.96.0.300"}, "spec.clusterIP", "valid IP address"),
    ({"loadBalancerSourceRanges": ["10.0.0.0/33"]}, "spec.loadBalancerSourceRanges[0]", "CIDR"),
    ({"sessionAffinity": "Cookie"}, "spec.sessionAffinity", "supported values"),
    ({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "between 1 and 86400"),
    ({"ports": [{"port": 0}]}, "spec.ports[0].port", "between 1 and 65535"),
    ({"ports": [{"port": 70000}]}, "spec.ports[0].port", "between 1 and 65535"),
    ({"ports": [{"port": 80, "protocol": "tcp"}]}, "spec.ports[0].protocol", "supported values"),
    ({"ports": [{"port": 80, "name": "a b"}]}, "spec.ports[0].name", "RFC 1123"),
    ({"ports": [{"port": 80, "targetPort": "a\nb"}]}, "spec.ports[0].targetPort", "control"),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}, "spec.ports[0].nodePort",
     "between 0 and 65535"),
])
def test_service_fields_that_reach_rules(spec, field, fragment):
    bad(svc_doc("web", **spec), "Service/web", field, fragment)


def test_apply_of_a_bad_external_ip_fails_before_anything_is_saved(tmp_path):
    """Defect 4: `apply` of externalIPs: [not-an-ip] was saved although its rules failed."""
    (tmp_path / "svc.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                                       "spec: {externalIPs: [not-an-ip], ports: [{port: 80}]}\n")
    text = one_line_error(lambda: load_objects(tmp_path / "svc.yaml"))
    assert text == (f"{tmp_path / 'svc.yaml'}: Service/web: spec.externalIPs[0]: Invalid value: "
                    "'not-an-ip': must be a valid IP address, (e.g. 10.9.8.7)")


def test_admission_checks_addresses_of_services_built_in_code():
    c = cluster()
    svc = parse(svc_doc("web"))
    svc.external_ips = ["bogus"]
    with pytest.raises(InvalidError) as info:
        c.admit([svc])
    check_error(info.value, "unit.yaml", "Service/web", "spec.externalIPs[0]", "valid IP address")
    assert not c.services


# ----------------------------------------------------------------------- address exhaustion

def test_pod_address_exhaustion_names_the_object_and_the_address_plan():
    c = cluster({"nodes": 1, "network": {"clusterCIDR": "10.244.0.0/28", "nodeSubnetPrefix": 29}})
    c.admit([parse(pod_doc(f"p{i}")) for i in range(5)])
    with pytest.raises(LabError) as info:
        c.admit([parse(pod_doc("frontend-abc"))])
    text = check_error(info.value, "unit.yaml", "Pod/frontend-abc", None,
                       "no free address left in 10.244.0.8/29, node1's pod subnet",
                       "a /29 holds 5 pods", "spec.network.clusterCIDR 10.244.0.0/28")
    assert "nodeSubnetPrefix 29" in text


def test_rc_address_exhaustion_names_the_rc():
    c = cluster({"nodes": 1, "network": {"clusterCIDR": "10.244.0.0/28", "nodeSubnetPrefix": 29}})
    with pytest.raises(LabError) as info:
        c.admit([parse(rc_doc("web", 6))])
    check_error(info.value, "unit.yaml", "ReplicationController/web", "spec.template",
                "no free address left in 10.244.0.8/29, node1's pod subnet")


def test_service_address_exhaustion_names_the_service():
    c = cluster({"network": {"serviceCIDR": "10.96.0.0/29", "dnsServiceIP": "10.96.0.2"}})
    c.admit([parse(svc_doc(f"s{i}")) for i in range(3)])          # .3 .4 .5 .6 minus .2 (DNS)
    with pytest.raises(LabError) as info:
        c.admit([parse(svc_doc(f"s{i}")) for i in range(3, 6)])
    check_error(info.value, "unit.yaml", "Service/s4", "spec.clusterIP",
                "no free address left in 10.96.0.0/29, the service range (spec.network.serviceCIDR")
