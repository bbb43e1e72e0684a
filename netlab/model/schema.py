"""The field names of the Kubernetes v1 objects netlab loads, for strict decoding.

Like `kubectl apply --validate=strict`, a field that is not a Kubernetes field (a typo such as
`readinesProbe` or `nodeSelectr`) is refused instead of silently dropped. Every real field is
accepted, also the many netlab does not implement (resources, volumes, securityContext,
tolerations, status, managedFields...): a manifest copied from a real cluster loads unchanged,
and the fields netlab has no use for are ignored.

The tables follow the Kubernetes API reference (core/v1, as of Kubernetes 1.34: ObjectMeta,
PodSpec, Container, Probe and its handlers, ContainerPort, EnvVar, ReplicationControllerSpec,
PodTemplateSpec, ServiceSpec, ServicePort, SessionAffinityConfig, ClientIPConfig, NamespaceSpec,
List/ListMeta). Sub-objects that netlab does not model are accepted wholesale (ANY): their own
fields are not checked.
"""
from __future__ import annotations

import difflib
from typing import Any, Optional

ANY = None          # a value whose inside is not checked here (a scalar, a map of strings, ...)


class Each:
    """A list whose items all have one schema."""

    def __init__(self, item: dict):
        self.item = item


def fields(*names: str, **nested: Any) -> dict:
    table = {name: ANY for name in names}
    table.update(nested)
    return table


OBJECT_META = fields(
    "annotations", "creationTimestamp", "deletionGracePeriodSeconds", "deletionTimestamp",
    "finalizers", "generateName", "generation", "labels", "managedFields", "name", "namespace",
    "ownerReferences", "resourceVersion", "selfLink", "uid")

LIST_META = fields("continue", "remainingItemCount", "resourceVersion", "selfLink")

EXEC_ACTION = fields("command")
HTTP_GET_ACTION = fields("host", "path", "port", "scheme",
                         httpHeaders=Each(fields("name", "value")))
TCP_SOCKET_ACTION = fields("host", "port")
GRPC_ACTION = fields("port", "service")

PROBE = fields(
    "failureThreshold", "initialDelaySeconds", "periodSeconds", "successThreshold",
    "terminationGracePeriodSeconds", "timeoutSeconds",
    exec=EXEC_ACTION, httpGet=HTTP_GET_ACTION, tcpSocket=TCP_SOCKET_ACTION, grpc=GRPC_ACTION)

CONTAINER_PORT = fields("containerPort", "hostIP", "hostPort", "name", "protocol")
ENV_VAR = fields("name", "value", "valueFrom")

CONTAINER = fields(
    "args", "command", "envFrom", "image", "imagePullPolicy", "lifecycle", "name",
    "resizePolicy", "resources", "restartPolicy", "restartPolicyRules", "securityContext",
    "stdin", "stdinOnce", "terminationMessagePath", "terminationMessagePolicy", "tty",
    "volumeDevices", "volumeMounts", "workingDir",
    env=Each(ENV_VAR), ports=Each(CONTAINER_PORT),
    livenessProbe=PROBE, readinessProbe=PROBE, startupProbe=PROBE)

POD_SPEC = fields(
    "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "dnsConfig",
    "dnsPolicy", "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC",
    "hostNetwork", "hostPID", "hostUsers", "hostname", "hostnameOverride", "imagePullSecrets",
    "nodeName", "nodeSelector", "os", "overhead", "preemptionPolicy", "priority",
    "priorityClassName", "readinessGates", "resourceClaims", "resources", "restartPolicy",
    "runtimeClassName", "schedulerName", "schedulingGates", "schedulingGroup",
    "securityContext", "serviceAccount", "serviceAccountName", "setHostnameAsFQDN",
    "shareProcessNamespace", "subdomain", "terminationGracePeriodSeconds", "tolerations",
    "topologySpreadConstraints", "volumes",
    containers=Each(CONTAINER), initContainers=Each(CONTAINER))

POD_TEMPLATE_SPEC = fields(metadata=OBJECT_META, spec=POD_SPEC)

RC_SPEC = fields("minReadySeconds", "replicas", "selector", template=POD_TEMPLATE_SPEC)

SERVICE_PORT = fields("appProtocol", "name", "nodePort", "port", "protocol", "targetPort")

SERVICE_SPEC = fields(
    "allocateLoadBalancerNodePorts", "clusterIP", "clusterIPs", "externalIPs", "externalName",
    "externalTrafficPolicy", "healthCheckNodePort", "internalTrafficPolicy", "ipFamilies",
    "ipFamilyPolicy", "loadBalancerClass", "loadBalancerIP", "loadBalancerSourceRanges",
    "publishNotReadyAddresses", "selector", "sessionAffinity", "trafficDistribution", "type",
    ports=Each(SERVICE_PORT),
    sessionAffinityConfig=fields(clientIP=fields("timeoutSeconds")))

NAMESPACE_SPEC = fields("finalizers")

# core/v1 Endpoints (no spec: subsets at the top) and discovery.k8s.io/v1 EndpointSlice.
OBJECT_REFERENCE = fields("apiVersion", "fieldPath", "kind", "name", "namespace", "resourceVersion", "uid")
ENDPOINT_ADDRESS = fields("hostname", "ip", "nodeName", targetRef=OBJECT_REFERENCE)
ENDPOINT_PORT = fields("appProtocol", "name", "port", "protocol")
ENDPOINT_SUBSET = fields(addresses=Each(ENDPOINT_ADDRESS), notReadyAddresses=Each(ENDPOINT_ADDRESS),
                         ports=Each(ENDPOINT_PORT))
SLICE_ENDPOINT = fields("addresses", "deprecatedTopology", "hints", "hostname", "nodeName", "zone",
                        conditions=fields("ready", "serving", "terminating"), targetRef=OBJECT_REFERENCE)


def _object(spec: dict) -> dict:
    return fields("apiVersion", "kind", "status", metadata=OBJECT_META, spec=spec)


KIND_SCHEMAS = {
    "Namespace": _object(NAMESPACE_SPEC),
    "Pod": _object(POD_SPEC),
    "ReplicationController": _object(RC_SPEC),
    "Service": _object(SERVICE_SPEC),
    "Endpoints": fields("apiVersion", "kind", metadata=OBJECT_META, subsets=Each(ENDPOINT_SUBSET)),
    "EndpointSlice": fields("addressType", "apiVersion", "kind", metadata=OBJECT_META,
                            endpoints=Each(SLICE_ENDPOINT), ports=Each(ENDPOINT_PORT)),
}

# networking.k8s.io/v1 NetworkPolicy (model/netpol.py).
LABEL_SELECTOR = fields("matchLabels", matchExpressions=Each(fields("key", "operator", "values")))
NETWORK_POLICY_PEER = fields(podSelector=LABEL_SELECTOR, namespaceSelector=LABEL_SELECTOR,
                             ipBlock=fields("cidr", "except"))
NETWORK_POLICY_PORT = fields("endPort", "port", "protocol")
KIND_SCHEMAS["NetworkPolicy"] = _object(fields(
    "policyTypes", podSelector=LABEL_SELECTOR,
    ingress=Each(fields(ports=Each(NETWORK_POLICY_PORT), **{"from": Each(NETWORK_POLICY_PEER)})),
    egress=Each(fields(ports=Each(NETWORK_POLICY_PORT), to=Each(NETWORK_POLICY_PEER)))))

LIST = fields("apiVersion", "kind", "items", metadata=LIST_META)


def find_unknown(value: Any, schema: Any, path: str = "") -> Optional[tuple[str, list[str]]]:
    """The first field of value that schema does not know, as (path, known names), or None.

    Only values of the expected shape are walked: a wrong type is the parser's to report.
    """
    if isinstance(schema, Each):
        if isinstance(value, list):
            for i, item in enumerate(value):
                found = find_unknown(item, schema.item, f"{path}[{i}]")
                if found:
                    return found
        return None
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return None
    for key, sub in value.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str) or key not in schema:
            return where, sorted(schema)
        if schema[key] is not ANY:
            found = find_unknown(sub, schema[key], where)
            if found:
                return found
    return None


def unknown_field_message(path: str, known: list[str]) -> str:
    """kubectl's strict-decoding message, with the nearest real field name as a hint."""
    from .errors import one_line
    path = one_line(path, 160)
    leaf = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.75) if len(leaf) < 100 else []
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f'unknown field "{path}"{hint}'

# networking.k8s.io/v1 Ingress and IngressClass, the v1beta1 Ingress (extensions/v1beta1 and
# networking.k8s.io/v1beta1: serviceName/servicePort, spec.backend), v1 Secret. An Ingress's
# spec is checked against its own version's table (model/ingress.py), after this first pass.
INGRESS_TLS = fields("hosts", "secretName")
TYPED_LOCAL_OBJECT_REF = fields("apiGroup", "kind", "name")
INGRESS_BACKEND_V1 = fields(service=fields("name", port=fields("name", "number")),
                            resource=TYPED_LOCAL_OBJECT_REF)
INGRESS_BACKEND_V1BETA1 = fields("serviceName", "servicePort", resource=TYPED_LOCAL_OBJECT_REF)


def _ingress(backend: dict, default_key: str) -> dict:
    path = fields("path", "pathType", backend=backend)
    rule = fields("host", http=fields(paths=Each(path)))
    return _object(fields("ingressClassName", rules=Each(rule), tls=Each(INGRESS_TLS),
                          **{default_key: backend}))


INGRESS_SCHEMAS = {"networking.k8s.io/v1": _ingress(INGRESS_BACKEND_V1, "defaultBackend"),
                   "extensions/v1beta1": _ingress(INGRESS_BACKEND_V1BETA1, "backend"),
                   "networking.k8s.io/v1beta1": _ingress(INGRESS_BACKEND_V1BETA1, "backend")}
KIND_SCHEMAS.update({
    "Ingress": _object(ANY),
    "IngressClass": fields("apiVersion", "kind", metadata=OBJECT_META, spec=fields(
        "controller", parameters=fields("apiGroup", "kind", "name", "namespace", "scope"))),
    "Secret": fields("apiVersion", "data", "immutable", "kind", "stringData", "type", metadata=OBJECT_META),
})

# apps/v1 Deployment, ReplicaSet, DaemonSet, StatefulSet (model/workloads.py), as of 1.34:
# DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, ReplicaSetSpec, DaemonSetSpec,
# DaemonSetUpdateStrategy, StatefulSetSpec, StatefulSetUpdateStrategy, StatefulSetOrdinals,
# StatefulSetPersistentVolumeClaimRetentionPolicy. PersistentVolumeClaim templates: not checked.
_SELECTOR = fields("matchLabels", matchExpressions=Each(fields("key", "operator", "values")))
KIND_SCHEMAS.update({
    "Deployment": _object(fields(
        "minReadySeconds", "paused", "progressDeadlineSeconds", "replicas", "revisionHistoryLimit",
        selector=_SELECTOR, template=POD_TEMPLATE_SPEC,
        strategy=fields("type", rollingUpdate=fields("maxSurge", "maxUnavailable")))),
    "ReplicaSet": _object(fields("minReadySeconds", "replicas", selector=_SELECTOR,
                                 template=POD_TEMPLATE_SPEC)),
    "DaemonSet": _object(fields(
        "minReadySeconds", "revisionHistoryLimit", selector=_SELECTOR, template=POD_TEMPLATE_SPEC,
        updateStrategy=fields("type", rollingUpdate=fields("maxSurge", "maxUnavailable")))),
    "StatefulSet": _object(fields(
        "minReadySeconds", "podManagementPolicy", "replicas", "revisionHistoryLimit", "serviceName",
        "volumeClaimTemplates", selector=_SELECTOR, template=POD_TEMPLATE_SPEC,
        ordinals=fields("start"),
        persistentVolumeClaimRetentionPolicy=fields("whenDeleted", "whenScaled"),
        updateStrategy=fields("type", rollingUpdate=fields("maxUnavailable", "partition")))),
})
