"""netlab.model.objects: parsing and validating v1 manifests, each error one line."""
from __future__ import annotations

import copy

import pytest

from netlab.model.errors import InvalidError
from netlab.model.objects import (Namespace, Pod, ReplicationController, Service, describe_obj,
                                  parse_object)

from .model_helpers import check_error, pod_doc, rc_doc, svc_doc

F = "labs/x/pod.yaml"


def bad(doc, obj, field, *fragments, file=F) -> str:
    """Parse doc, expect a one-line error naming file, object and field."""
    with pytest.raises(InvalidError) as info:
        parse_object(doc, file)
    return check_error(info.value, file, obj, field, *fragments)


def with_container(**fields) -> dict:
    container = {"name": "c", "image": "netexec", **fields}
    return pod_doc("web", containers=[container])


# ---------------------------------------------------------------------------- Pod


def test_full_pod():
    doc = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web", "v": 2},
                     "annotations": {"note": "x"}},
        "spec": {
            "nodeName": "node2", "nodeSelector": {"disk": "ssd"}, "restartPolicy": "Never",
            "dnsPolicy": "Default", "hostname": "h", "subdomain": "s",
            "containers": [
                {"name": "web", "image": "netexec", "command": ["/bin/netexec"], "args": ["--http-port", 8080],
                 "ports": [{"containerPort": 8080, "name": "http"},
                           {"containerPort": 8081, "protocol": "UDP", "name": "udp"}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B"}],
                 "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"},
                                    "periodSeconds": 2, "initialDelaySeconds": 1},
                 "livenessProbe": {"tcpSocket": {"port": 8080}, "failureThreshold": 5}},
                {"name": "side", "image": "pause",
                 "readinessProbe": {"exec": {"command": ["true"]}}}]},
        "status": {"podIP": "10.244.2.9"}}
    pod = parse_object(doc, F)
    assert isinstance(pod, Pod) and pod.kind == "Pod"
    assert pod.meta.key == "team-a/web"
    assert pod.meta.labels == {"app": "web", "v": "2"}
    assert pod.meta.source == F and pod.meta.raw is doc
    assert pod.node == "node2" and pod.spec.node_selector == {"disk": "ssd"}
    assert pod.spec.restart_policy == "Never" and pod.spec.dns_policy == "Default"
    assert pod.pod_ip == "10.244.2.9"
    web, side = pod.spec.containers
    assert web.args == ["--http-port", "8080"]
    assert [(p.container_port, p.protocol, p.name) for p in web.ports] == [
        (8080, "TCP", "http"), (8081, "UDP", "udp")]
    assert web.env == [("A", "1"), ("B", "")]
    assert web.readiness_probe.kind == "httpGet" and web.readiness_probe.port == "http"
    assert web.readiness_probe.path == "/healthz" and web.readiness_probe.period == 2
    assert web.liveness_probe.kind == "tcpSocket" and web.liveness_probe.port == 8080
    assert web.liveness_probe.failure_threshold == 5
    assert side.readiness_probe.kind == "exec" and side.readiness_probe.command == ["true"]
    assert pod.find_port("udp").container_port == 8081
    assert pod.find_port("nope") is None


def test_pod_defaults():
    pod = parse_object(pod_doc("web"), F)
    assert pod.meta.namespace == "default"
    assert pod.spec.restart_policy == "Always" and pod.spec.dns_policy == "ClusterFirst"
    assert pod.node == "" and pod.pod_ip == "" and pod.owner == ""
    assert pod.spec.containers[0].ports[0].protocol == "TCP"


def test_container_port_out_of_range_message_is_exact():
    doc = with_container(ports=[{"containerPort": 70000}])
    assert bad(doc, "Pod/web", "spec.containers[0].ports[0].containerPort") == (
        "labs/x/pod.yaml: Pod/web: spec.containers[0].ports[0].containerPort: "
        "Invalid value: 70000: must be between 1 and 65535, inclusive")


@pytest.mark.parametrize("container,field,why", [
    ({"ports": [{"containerPort": 0}]}, "spec.containers[0].ports[0].containerPort", "between 1 and 65535"),
    ({"ports": [{"containerPort": "80"}]}, "spec.containers[0].ports[0].containerPort", "must be an integer"),
    ({"ports": [{"containerPort": True}]}, "spec.containers[0].ports[0].containerPort", "must be an integer"),
    ({"ports": [{"name": "http"}]}, "spec.containers[0].ports[0].containerPort", "Required value"),
    ({"ports": [{"containerPort": 80, "protocol": "ICMP"}]}, "spec.containers[0].ports[0].protocol",
     "Invalid value: 'ICMP': supported values"),
    ({"ports": [{"containerPort": 80, "name": "HTTP_PORT"}]}, "spec.containers[0].ports[0].name",
     "Invalid value: 'HTTP_PORT'"),
    ({"ports": "80"}, "spec.containers[0].ports", "must be a list"),
    ({"ports": [80]}, "spec.containers[0].ports[0]", "must be a mapping"),
    ({"env": [{"value": "x"}]}, "spec.containers[0].env[0].name", "Required value"),
    ({"command": "sleep 1"}, "spec.containers[0].command", "must be a list"),
    ({"args": [["x"]]}, "spec.containers[0].args[0]", "must be a string"),
])
def test_bad_container_fields(container, field, why):
    bad(with_container(**container), "Pod/web", field, why)


@pytest.mark.parametrize("probe,field,why", [
    ({"periodSeconds": 0, "httpGet": {"port": 80}}, "periodSeconds",
     "Invalid value: 0: must be greater than or equal to 1"),
    ({"initialDelaySeconds": -1, "httpGet": {"port": 80}}, "initialDelaySeconds",
     "must be greater than or equal to 0"),
    ({"timeoutSeconds": "1s", "httpGet": {"port": 80}}, "timeoutSeconds", "must be an integer"),
    ({"httpGet": {"port": 70000}}, "httpGet.port", "Invalid value: 70000: must be between 1 and 65535"),
    ({"httpGet": {"path": "/"}}, "httpGet.port", "Required value"),
    ({"tcpSocket": {"port": 0}}, "tcpSocket.port", "between 1 and 65535"),
    ({"tcpSocket": {"port": "Web_Port"}}, "tcpSocket.port", "Invalid value: 'Web_Port'"),
    ({"httpGet": {"port": "metrics"}}, "httpGet.port",
     "Invalid value: 'metrics': port name is not declared by this container"),
    ({"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}, "tcpSocket",
     "may not specify more than 1 handler type"),
    ({"periodSeconds": 5}, None, "must specify one of httpGet, tcpSocket or exec"),
    ("yes", None, "must be a mapping"),
])
def test_bad_probes(probe, field, why):
    path = "spec.containers[0].readinessProbe" + (f".{field}" if field else "")
    bad(with_container(ports=[{"containerPort": 8080, "name": "http"}], readinessProbe=probe),
        "Pod/web", path, why)


def test_probe_named_port_resolves_in_its_own_container_only():
    doc = pod_doc("web", containers=[
        {"name": "a", "ports": [{"containerPort": 8080, "name": "http"}]},
        {"name": "b", "livenessProbe": {"httpGet": {"port": "http"}}}])
    bad(doc, "Pod/web", "spec.containers[1].livenessProbe.httpGet.port", "not declared")
    doc["spec"]["containers"][1]["livenessProbe"]["httpGet"]["port"] = 8080
    assert parse_object(doc, F).spec.containers[1].liveness_probe.port == 8080
    doc["spec"]["containers"][1]["livenessProbe"]["httpGet"]["port"] = "8080"     # numeric string
    assert parse_object(doc, F).spec.containers[1].liveness_probe.port == 8080


@pytest.mark.parametrize("mutate,field,why", [
    (lambda d: d["metadata"].pop("name"), "metadata.name", "Required value"),
    (lambda d: d["metadata"].update(name="Web"), "metadata.name", "Invalid value: 'Web'"),
    (lambda d: d["metadata"].update(name="web_1"), "metadata.name", "RFC 1123 subdomain"),
    (lambda d: d["metadata"].update(namespace="a.b"), "metadata.namespace", "RFC 1123 label"),
    (lambda d: d["metadata"].update(labels=["app"]), "metadata.labels", "must be a mapping"),
    (lambda d: d["spec"].pop("containers"), "spec.containers", "Required value"),
    (lambda d: d["spec"].update(containers=[]), "spec.containers", "Required value"),
    (lambda d: d["spec"]["containers"][0].pop("name"), "spec.containers[0].name", "Required value"),
    (lambda d: d["spec"]["containers"][0].update(name="Web"), "spec.containers[0].name", "RFC 1123 label"),
    (lambda d: d["spec"]["containers"].append({"name": "c"}), "spec.containers[1].name",
     "Duplicate value"),
    (lambda d: d["spec"].update(restartPolicy="Sometimes"), "spec.restartPolicy", "'Sometimes'"),
    (lambda d: d["spec"].update(dnsPolicy="Google"), "spec.dnsPolicy", "'Google'"),
    (lambda d: d["spec"].update(nodeSelector="ssd"), "spec.nodeSelector", "must be a mapping"),
    (lambda d: d.update(status=[]), "status", "must be a mapping"),
])
def test_bad_pod_fields(mutate, field, why):
    doc = pod_doc("web")
    mutate(doc)
    obj = "Pod/web" if doc["metadata"].get("name") == "web" else f"Pod/{doc['metadata'].get('name', '?')}"
    bad(doc, obj, field, why)


def test_metadata_not_a_mapping():
    bad({"apiVersion": "v1", "kind": "Pod", "metadata": "web", "spec": {}}, "Pod/?", "metadata",
        "must be a mapping")


def test_dotted_pod_name_is_allowed():
    assert parse_object(pod_doc("web.v1"), F).meta.name == "web.v1"


def test_owner_reference_marks_the_controller():
    doc = pod_doc("web-abcde")
    doc["metadata"]["ownerReferences"] = [{"kind": "ReplicationController", "name": "web",
                                           "controller": True}]
    assert parse_object(doc, F).owner == "ReplicationController/web"


# ---------------------------------------------------------------------------- ReplicationController

R = "labs/x/rc.yaml"


def test_rc():
    rc = parse_object(rc_doc("frontend", 3), R)
    assert isinstance(rc, ReplicationController)
    assert rc.replicas == 3 and rc.template_labels == {"app": "frontend"}
    assert rc.selector.matches({"app": "frontend", "x": "y"})
    assert rc.template.containers[0].name == "c"
    assert rc.raw_template["metadata"]["labels"] == {"app": "frontend"}


def test_rc_defaults_replicas_and_selector_from_template():
    doc = rc_doc("web")
    del doc["spec"]["replicas"], doc["spec"]["selector"]
    rc = parse_object(doc, R)
    assert rc.replicas == 1
    assert str(rc.selector) == "app=web"


def test_rc_zero_replicas_is_valid():
    assert parse_object(rc_doc("web", 0), R).replicas == 0


@pytest.mark.parametrize("mutate,field,why", [
    (lambda s: s.update(replicas=-1), "spec.replicas", "Invalid value: -1: must be between 0 and 10000"),
    (lambda s: s.update(replicas="3"), "spec.replicas", "must be an integer"),
    (lambda s: s.pop("template"), "spec.template", "Required value"),
    (lambda s: s.update(selector={"app": "other"}), "spec.template.metadata.labels",
     "`selector` does not match template `labels`"),
    (lambda s: (s.pop("selector"), s["template"].pop("metadata")), "spec.selector", "Required value"),
    (lambda s: s.update(selector=["app"]), "spec.selector", "must be a mapping"),
    (lambda s: s.update(selector={"matchExpressions": [{"key": "app", "operator": "Near"}]}),
     "spec.selector.matchExpressions[0].operator", "operator must be In"),
    (lambda s: s["template"]["spec"]["containers"][0]["ports"][0].update(containerPort=70000),
     "spec.template.spec.containers[0].ports[0].containerPort", "between 1 and 65535"),
    (lambda s: s["template"]["spec"].update(containers=[]), "spec.template.spec.containers",
     "Required value"),
])
def test_bad_rc(mutate, field, why):
    doc = rc_doc("web")
    mutate(doc["spec"])
    bad(doc, "ReplicationController/web", field, why, file=R)


def test_rc_label_selector_with_expressions():
    doc = rc_doc("web", labels={"app": "web", "tier": "fe"})
    doc["spec"]["selector"] = {"matchLabels": {"app": "web"},
                               "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]}
    rc = parse_object(doc, R)
    assert rc.selector.matches({"app": "web", "tier": "fe"})
    assert not rc.selector.matches({"app": "web", "tier": "be"})


# ---------------------------------------------------------------------------- Service

S = "labs/x/svc.yaml"


def test_service():
    svc = parse_object(svc_doc("frontend", type="NodePort",
                               ports=[{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30001},
                                      {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "5353"}],
                               sessionAffinity="ClientIP",
                               sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
                               externalIPs=["203.0.113.7"]), S)
    assert isinstance(svc, Service) and svc.type == "NodePort"
    assert svc.selector == {"app": "frontend"}
    http, dns = svc.ports
    assert (http.port, http.target, http.node_port, http.protocol) == (80, "http", 30001, "TCP")
    assert (dns.target, dns.protocol) == (5353, "UDP")                  # numeric string -> int
    assert svc.session_affinity == "ClientIP" and svc.affinity_timeout == 60
    assert svc.external_ips == ["203.0.113.7"]
    assert svc.cluster_ip == "" and not svc.headless


def test_service_defaults():
    doc = svc_doc("db", ports=[{"port": 6379}])
    svc = parse_object(doc, S)
    assert svc.type == "ClusterIP" and svc.ports[0].target == 6379
    assert svc.session_affinity == "None" and svc.affinity_timeout == 10800
    del doc["spec"]["selector"]
    assert parse_object(doc, S).selector is None            # no selector: endpoints are manual


def test_headless_service():
    svc = parse_object(svc_doc("db", clusterIP="None"), S)
    assert svc.headless


@pytest.mark.parametrize("mutate,field,why", [
    (lambda d: d["metadata"].update(name="web.v1"), "metadata.name", "RFC 1123 label"),
    (lambda d: d["spec"].update(type="Ingress"), "spec.type", "Invalid value: 'Ingress'"),
    (lambda d: d["spec"].update(type="ExternalName"), "spec.externalName", "Required value"),
    (lambda d: d["spec"].update(type="ExternalName", externalName="db_1.example.net"), "spec.externalName",
     "Invalid value: 'db_1.example.net'"),
    (lambda d: d["spec"].update(type="ExternalName", externalName="db.example.net", clusterIP="10.96.0.9"),
     "spec.clusterIP", "may not be set for ExternalName services"),
    (lambda d: d["spec"].update(externalTrafficPolicy="Local"), "spec.externalTrafficPolicy",
     "may only be set for externally-accessible services"),
    (lambda d: d["spec"].update(type="NodePort", externalTrafficPolicy="Nearby"), "spec.externalTrafficPolicy",
     'supported values: "Cluster", "Local"'),
    (lambda d: d["spec"].update(internalTrafficPolicy="Node"), "spec.internalTrafficPolicy",
     'supported values: "Cluster", "Local"'),
    (lambda d: d["spec"].update(type="NodePort", externalTrafficPolicy="Local", healthCheckNodePort=30100),
     "spec.healthCheckNodePort", "may only be set when `type` is 'LoadBalancer'"),
    (lambda d: d["spec"].update(loadBalancerSourceRanges=["192.0.2.0/24"]), "spec.loadBalancerSourceRanges",
     "may only be used when `type` is 'LoadBalancer'"),
    (lambda d: d["spec"].pop("ports"), "spec.ports", "Required value"),
    (lambda d: d["spec"]["ports"].append({"port": 81, "name": "b"}), "spec.ports[0].name",
     "multi-port service must be named"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]),
     "spec.ports[1].port", "Duplicate value"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]),
     "spec.ports[1].name", "Duplicate value"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "name": "Http"}]), "spec.ports[0].name", "'Http'"),
    (lambda d: d["spec"].update(ports=[{"port": 0}]), "spec.ports[0].port", "between 1 and 65535"),
    (lambda d: d["spec"].update(ports=[{"targetPort": 80}]), "spec.ports[0].port", "Required value"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "targetPort": 0}]), "spec.ports[0].targetPort",
     "Invalid value: 0: must be between 1 and 65535"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "targetPort": 70000}]), "spec.ports[0].targetPort",
     "between 1 and 65535"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "targetPort": "70000"}]), "spec.ports[0].targetPort",
     "Invalid value: 70000: must be between 1 and 65535"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "targetPort": "Web_Port"}]),
     "spec.ports[0].targetPort", "Invalid value: 'Web_Port'"),
    (lambda d: d["spec"].update(ports=[{"port": 80, "nodePort": 30001}]), "spec.ports[0].nodePort",
     "may not be used when `type` is 'ClusterIP'"),
    (lambda d: d["spec"].update(type="NodePort", clusterIP="None"), "spec.clusterIP",
     "Invalid value: 'None': may not be set to 'None' for NodePort services"),
    (lambda d: d["spec"].update(type="LoadBalancer", clusterIP="None"), "spec.clusterIP",
     "for LoadBalancer services"),
    (lambda d: d["spec"].update(sessionAffinity="Cookie"), "spec.sessionAffinity", "'Cookie'"),
    (lambda d: d["spec"].update(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "between 1 and 86400"),
    (lambda d: d["spec"].update(selector="app=web"), "spec.selector", "must be a mapping"),
])
def test_bad_service(mutate, field, why):
    doc = svc_doc("web")
    mutate(doc)
    bad(doc, f"Service/{doc['metadata']['name']}", field, why, file=S)


def test_same_port_number_on_two_protocols_is_allowed():
    svc = parse_object(svc_doc("dns", ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                                              {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]), S)
    assert [p.protocol for p in svc.ports] == ["UDP", "TCP"]


# ---------------------------------------------------------------------------- Namespace and envelope


def test_namespace():
    ns = parse_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}, F)
    assert isinstance(ns, Namespace) and ns.meta.name == "team-a" and ns.meta.namespace == ""
    bad({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}, "Namespace/team.a",
        "metadata.name", "RFC 1123 label")


def test_document_that_is_not_a_mapping():
    with pytest.raises(InvalidError) as info:
        parse_object(["a"], F, index=2)
    assert str(info.value) == f"{F}: document 3 is not a mapping"


@pytest.mark.parametrize("doc,obj,field,why", [
    ({"apiVersion": "v1", "metadata": {"name": "web"}}, "?/web", "kind", "Required value"),
    ({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "web"}}, "CronJob/web", "kind",
     "Invalid value: 'CronJob': unknown kind (netlab knows DaemonSet, Deployment, EndpointSlice, Endpoints, "),
    ({"kind": "Pod", "metadata": {"name": "web"}}, "Pod/web", "apiVersion", "Required value"),
    ({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "web"}}, "Pod/web", "apiVersion",
     "Invalid value: 'apps/v1': Pod is served as apiVersion 'v1'"),
])
def test_kind_and_api_version(doc, obj, field, why):
    bad(doc, obj, field, why)


def test_describe_obj():
    assert describe_obj({"kind": "Pod", "metadata": {"name": "web"}}) == "Pod/web"
    assert describe_obj({"kind": "Pod"}) == "Pod/?"
    assert describe_obj("x") == ""


def test_parsing_does_not_modify_the_manifest():
    doc = rc_doc("web")
    before = copy.deepcopy(doc)
    parse_object(doc, R)
    assert doc == before
