"""get and describe: what the lab holds, shaped like kubectl's output."""
from __future__ import annotations

from typing import Optional

import typer

from .common import AllNamespacesOption, LabOption, NamespaceOption, OutputOption, lab_name
from .main import app
from .output import OUTPUT_FORMATS, age, as_list, emit, table
from . import ingress_view

RESOURCES = {
    "nodes": "nodes", "node": "nodes", "no": "nodes",
    "pods": "pods", "pod": "pods", "po": "pods",
    "services": "services", "service": "services", "svc": "services",
    "endpoints": "endpoints", "ep": "endpoints",
    "replicationcontrollers": "rcs", "replicationcontroller": "rcs", "rc": "rcs",
    "namespaces": "namespaces", "namespace": "namespaces", "ns": "namespaces",
    "ingresses": "ingresses", "ingress": "ingresses", "ing": "ingresses",
    "ingressclasses": "ingressclasses", "ingressclass": "ingressclasses",
    "secrets": "secrets", "secret": "secrets",
}
from . import netpol_view  # noqa: E402
RESOURCES.update(netpol_view.RESOURCES)
from . import apps_cmds  # noqa: E402  (Deployments, ReplicaSets, DaemonSets, StatefulSets)
RESOURCES.update(apps_cmds.RESOURCES)


def _resource(kind: str) -> str:
    from ..model.errors import LabError
    found = RESOURCES.get(kind.lower())
    if not found:
        raise LabError(f'the server doesn\'t have a resource type "{kind}" '
                       f"(netlab knows: nodes, pods, services, endpoints, rc, deployments, replicasets, daemonsets, statefulsets, namespaces, ingresses, ingressclasses, secrets)")
    return found


def _context(lab: Optional[str]):
    from .. import engine
    name = lab_name(lab)
    return engine.load(name), engine.pod_status(name)


def _filter(objs, namespace: str, all_ns: bool, selector: Optional[str], name: Optional[str]):
    from ..model.selectors import parse_selector
    sel = parse_selector(selector, field="--selector") if selector else None
    out = []
    for o in objs:
        if not all_ns and o.meta.namespace != namespace:
            continue
        if sel and not sel.matches(o.meta.labels):
            continue
        if name and o.meta.name != name:
            continue
        out.append(o)
    return sorted(out, key=lambda o: (o.meta.namespace, o.meta.name))


def pod_view(cluster, status: dict, pod) -> dict:
    """What `get pods` shows of a pod, and what its JSON carries."""
    st = status.get(pod.meta.key, {})
    containers = st.get("containers", [])
    ready = sum(1 for c in containers if c.get("ready"))
    phase = st.get("phase", "Pending")
    reason = next((c.get("reason") for c in containers if c.get("state") != "Running" and c.get("reason")), "")
    return {"name": pod.meta.name, "namespace": pod.meta.namespace, "node": pod.spec.node_name,
            "podIP": pod.pod_ip, "phase": phase, "status": reason or phase,
            "ready": f"{ready}/{len(pod.spec.containers)}",
            "restarts": sum(c.get("restartCount", 0) for c in containers),
            "netns": cluster.pod_netns(pod), "labels": pod.meta.labels, "created": pod.created,
            "holderPid": st.get("holderPid", 0)}


def node_statuses(lab: str) -> dict[str, str]:
    """Each node's STATUS as the agent (the lab's node controller) reports it: Ready when its
    Ready condition is True, NotReady otherwise (a node-down fault, an evicted node). Without
    a running agent nobody knows: every node is Unknown."""
    from ..runtime import agent_client
    if agent_client.agent_state(lab)[0] != "running":
        return {}
    found = {}
    for item in agent_client.call(lab, "GET", "/api/v1/nodes", timeout=30).get("items", []):
        conditions = (item.get("status") or {}).get("conditions") or []
        ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
        found[item["metadata"]["name"]] = "Ready" if ready == "True" else "NotReady"
    return found


def _pods_table_from_api(kind: str, output: str, lab: Optional[str]) -> bool:
    """`get pods` as a table from the agent's server-side Table, as kubectl gets it: no state
    file to parse (megabytes in a big lab) and none of the model to import. A dead agent's
    lab falls back to what the files say."""
    if kind.lower() not in ("pods", "pod", "po") or output not in ("table", "wide"):
        return False
    from ..runtime import agent_client
    return agent_client.agent_state(lab_name(lab))[0] == "running"


@app.command()
def get(kind: str = typer.Argument(..., help="nodes, pods, services (svc), endpoints (ep), rc, deploy, rs, ds, sts or namespaces."),
        name: Optional[str] = typer.Argument(None, help="Only this object."),
        lab: Optional[str] = LabOption, namespace: str = NamespaceOption,
        all_namespaces: bool = AllNamespacesOption,
        selector: Optional[str] = typer.Option(None, "--selector", "-l", help="Label selector, e.g. name=redis-slave,env!=prod."),
        output: str = OutputOption,
        show_labels: bool = typer.Option(False, "--show-labels", help="Add a LABELS column."),
        watch: bool = typer.Option(False, "--watch", "-w", help="After listing, print changes as they happen.")
        ) -> None:
    """Display objects of the lab, like kubectl get (-o jsonpath=..., custom-columns=... too)."""
    from . import kubeget
    if apps_cmds.handles(kind):
        apps_cmds.get(kind, name, lab, namespace, all_namespaces, output)
        return
    if kubeget.handles(kind, output, show_labels, watch) or _pods_table_from_api(kind, output, lab):
        # The objects as the lab's API serves them to kubectl (cli/kubeget.py).
        kubeget.get(kind, name, lab, namespace, all_namespaces, selector, output, show_labels, watch)
        return
    from .. import engine
    from ..model.cluster import to_manifest
    from ..model.errors import LabError
    if output not in OUTPUT_FORMATS:
        raise LabError(f"unknown output format {output!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    resource = _resource(kind)
    cluster, status = _context(lab)
    structured = output in ("json", "yaml")
    if resource == "nodes":
        nodes = [n for n in cluster.nodes if not name or n.name == name]
        if name and not nodes:
            raise LabError(f'nodes "{name}" not found')
        readiness = node_statuses(cluster.name)
        if structured:
            emit(as_list([{"name": n.name, "status": readiness.get(n.name, "Unknown"),
                           "internalIP": n.internal_ip, "podCIDR": n.pod_cidr,
                           "netns": n.netns, "labels": n.labels, "vtepMAC": n.vtep_mac,
                           "backend": cluster.config.backend,
                           "pods": len(cluster.pods_on(n.name))} for n in nodes]), output)
            return
        headers = ["NAME", "STATUS", "ROLES", "INTERNAL-IP", "POD-CIDR"]
        rows = [[n.name, readiness.get(n.name, "Unknown"), "<none>", n.internal_ip, n.pod_cidr] for n in nodes]
        if output == "wide":
            headers += ["BACKEND", "PODS", "NETNS"]
            backend = cluster.config.backend + ("+canal" if cluster.config.canal else "")
            rows = [r + [backend, len(cluster.pods_on(n.name)), n.netns] for r, n in zip(rows, nodes)]
        typer.echo(table(headers, rows))
        return
    if resource in netpol_view.KINDS:
        objs = _filter(cluster.policies.values(), namespace, all_namespaces, selector, name)
        if name and not objs:
            raise LabError(f'networkpolicies.networking.k8s.io "{name}" not found in namespace "{namespace}"')
        netpol_view.get(cluster, objs, output, all_namespaces)
        return
    if resource == "namespaces":
        spaces = [ns for ns in cluster.namespaces.values() if not name or ns.meta.name == name]
        if structured:
            emit(as_list([to_manifest(ns) for ns in spaces]), output)
        else:
            typer.echo(table(["NAME", "STATUS"], [[ns.meta.name, "Active"] for ns in spaces]))
        return
    if resource in ingress_view.KINDS:
        store = {"ingresses": cluster.ingresses, "ingressclasses": cluster.ingress_classes,
                 "secrets": cluster.secrets}[resource]
        objs = _filter(store.values(), namespace, all_namespaces or resource == "ingressclasses", selector, name)
        if name and not objs:
            raise LabError(f'{resource} "{name}" not found' + ("" if resource == "ingressclasses"
                                                             else f' in namespace "{namespace}"'))
        ingress_view.get(cluster, status, resource, objs, output, all_namespaces)
        return
    source = {"pods": cluster.pods, "services": cluster.services, "endpoints": cluster.services,
              "rcs": cluster.rcs}[resource]
    objs = _filter(source.values(), namespace, all_namespaces, selector, name)
    if name and not objs:
        raise LabError(f'{resource} "{name}" not found in namespace "{namespace}"')
    nscol = ["NAMESPACE"] if all_namespaces else []
    ns_of = (lambda o: [o.meta.namespace]) if all_namespaces else (lambda o: [])
    if output == "name":
        singular = {"pods": "pod", "services": "service", "endpoints": "endpoints", "rcs": "replicationcontroller"}
        typer.echo("\n".join(f"{singular[resource]}/{o.meta.name}" for o in objs))
        return
    if resource == "pods":
        views = [pod_view(cluster, status, p) for p in objs]
        if structured:
            emit(as_list(views), output)
            return
        headers = nscol + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        rows = [ns_of(p) + [v["name"], v["ready"], v["status"], v["restarts"], age(v["created"])]
                for p, v in zip(objs, views)]
        if output == "wide":
            headers += ["IP", "NODE"]
            rows = [r + [v["podIP"], v["node"]] for r, v in zip(rows, views)]
        typer.echo(table(headers, rows))
    elif resource == "services":
        if structured:
            emit(as_list([to_manifest(s) for s in objs]), output)
            return
        headers = nscol + ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
        rows = [ns_of(s) + [s.meta.name, s.type, s.cluster_ip or "<none>", external_ip(s, output == "wide"),
                            ",".join(f"{p.port}{':%d' % p.node_port if p.node_port else ''}/{p.protocol}"
                                     for p in s.ports) or "<none>"] for s in objs]
        if output == "wide":
            headers += ["SELECTOR"]
            rows = [r + [",".join(f"{k}={v}" for k, v in (s.selector or {}).items()) or "<none>"]
                    for r, s in zip(rows, objs)]
        typer.echo(table(headers, rows))
    elif resource == "endpoints":
        from ..model.services import service_endpoints
        ready = engine.ready_from(status)
        eps = [(s, service_endpoints(cluster, s, ready)) for s in objs if s.type != "ExternalName"]
        if structured:
            emit(as_list([{"name": s.meta.name, "namespace": s.meta.namespace,
                           "subsets": {port or "": [{"ip": e.ip, "port": e.port, "pod": e.pod, "node": e.node}
                                                    for e in lst] for port, lst in by_port.items()}}
                          for s, by_port in eps]), output)
            return
        rows = [ns_of(s) + [s.meta.name, endpoints_column(by_port)] for s, by_port in eps]
        typer.echo(table(nscol + ["NAME", "ENDPOINTS"], rows))
    else:  # rcs
        if structured:
            emit(as_list([to_manifest(r) for r in objs]), output)
            return
        rows = []
        for rc in objs:
            mine = cluster.rc_pods(rc)
            ready = sum(1 for p in mine if status.get(p.meta.key, {}).get("ready"))
            rows.append(ns_of(rc) + [rc.meta.name, rc.replicas, len(mine), ready])
        headers = nscol + ["NAME", "DESIRED", "CURRENT", "READY"]
        if output == "wide":
            headers += ["CONTAINERS", "IMAGES", "SELECTOR"]
            rows = [r + [",".join(c.name for c in rc.template.containers),
                         ",".join(c.image for c in rc.template.containers), str(rc.selector)]
                    for r, rc in zip(rows, objs)]
        typer.echo(table(headers, rows))


def external_ip(svc, wide: bool = False) -> str:
    """kubectl's EXTERNAL-IP column (getServiceExternalIP): load-balancer ingress (cut to 16
    characters unless wide) and external IPs, an ExternalName's name, <pending> or <none>."""
    if svc.type == "ExternalName":
        return svc.external_name
    if svc.type == "LoadBalancer":
        lb = ",".join(svc.load_balancer_ips)
        if len(lb) > 16 and not wide:
            lb = lb[:13] + "..."
        shown = ([lb] if lb else []) + svc.external_ips
        return ",".join(shown) or "<pending>"
    return ",".join(svc.external_ips) or "<none>"


def endpoints_column(by_port: dict) -> str:
    """kubectl's ENDPOINTS column (formatEndpoints): ip:port once per port and address, so a
    pod behind two ports (kube-dns's 53/UDP and 53/TCP) shows twice; the first three, then
    "+ N more..."."""
    shown = [str(e) for lst in by_port.values() for e in lst]
    if not shown:
        return "<none>"
    more = f" + {len(shown) - 3} more..." if len(shown) > 3 else ""
    return ",".join(shown[:3]) + more


@app.command()
def describe(kind: str = typer.Argument(..., help="pod, node or service."),
             name: str = typer.Argument(...), lab: Optional[str] = LabOption,
             namespace: str = NamespaceOption) -> None:
    """Show one object in detail, with its events, like kubectl describe."""
    from .. import engine
    from ..model.errors import LabError
    resource = _resource(kind)
    cluster, status = _context(lab)
    lines: list[str] = []
    if resource == "pods":
        pod = cluster.pod(name, namespace)
        st = status.get(pod.meta.key, {})
        view = pod_view(cluster, status, pod)
        from ..runtime import workloads
        lines += [f"Name:         {pod.meta.name}", f"Namespace:    {pod.meta.namespace}",
                  f"Node:         {pod.spec.node_name}/{cluster.node(pod.spec.node_name).internal_ip}",
                  f"Labels:       {', '.join(f'{k}={v}' for k, v in pod.meta.labels.items()) or '<none>'}",
                  f"Status:       {view['phase']}", f"IP:           {pod.pod_ip}",
                  f"Controlled By:  {pod.owner or '<none>'}",
                  f"Netns:        {view['netns']}", f"Holder PID:   {st.get('holderPid', '-')}",
                  "Containers:"]
        cstate = {c["name"]: c for c in st.get("containers", [])}
        for c in pod.spec.containers:
            cs = cstate.get(c.name, {})
            lines += [f"  {c.name}:", f"    Image:          {c.image or '<none>'}",
                      f"    Runs:           {workloads.describe(c.image, c.command)}",
                      f"    Ports:          {', '.join(f'{p.container_port}/{p.protocol}' for p in c.ports) or '<none>'}",
                      f"    State:          {cs.get('state', 'Waiting')}"
                      + (f" ({cs.get('reason')})" if cs.get("reason") else ""),
                      f"    Last Exit Code: {cs.get('exitCode') if cs.get('exitCode') is not None else '-'}",
                      f"    Restart Count:  {cs.get('restartCount', 0)}"]
        events = st.get("events", [])
    elif resource == "nodes":
        node = cluster.node(name)
        lines += [f"Name:         {node.name}",
                  f"Status:       {node_statuses(cluster.name).get(node.name, 'Unknown')}",
                  f"Labels:       {', '.join(f'{k}={v}' for k, v in node.labels.items())}",
                  f"InternalIP:   {node.internal_ip}", f"PodCIDR:      {node.pod_cidr}",
                  f"Netns:        {node.netns}", f"Backend:      {cluster.config.backend_label}",
                  f"VTEP:         flannel.1 {node.vtep_ip} {node.vtep_mac}" if cluster.config.backend == "vxlan" else "",
                  f"TUN:          flannel0 {node.vtep_ip}, flanneld on {node.internal_ip}:8285"
                  if cluster.config.backend == "udp" else "",
                  f"Pods:         ({len(cluster.pods_on(node.name))} in total)"]
        lines += [f"  {p.meta.namespace}/{p.meta.name} {p.pod_ip}" for p in cluster.pods_on(node.name)]
        events = []
    elif resource == "services":
        from ..model.services import service_endpoints
        svc = cluster.service(name, namespace)
        eps = service_endpoints(cluster, svc, engine.ready_from(status))
        lines += [f"Name:              {svc.meta.name}", f"Namespace:         {svc.meta.namespace}",
                  f"Selector:          {','.join(f'{k}={v}' for k, v in (svc.selector or {}).items()) or '<none>'}",
                  f"Type:              {svc.type}", f"IP:                {svc.cluster_ip}"]
        if svc.external_name:
            lines.append(f"External Name:     {svc.external_name}")
        if svc.external_ips:
            lines.append(f"External IPs:      {','.join(svc.external_ips)}")
        for ip in svc.load_balancer_ips:
            lines.append(f"LoadBalancer Ingress: {ip}")
        if svc.source_ranges:
            lines.append(f"LoadBalancer Source Ranges: {','.join(svc.source_ranges)}")
        if svc.external_traffic_policy:
            lines.append(f"External Traffic Policy: {svc.external_traffic_policy}")
        lines.append(f"Internal Traffic Policy: {svc.internal_traffic_policy}")
        if svc.health_check_node_port:
            lines.append(f"HealthCheck NodePort: {svc.health_check_node_port}")
        for p in svc.ports:
            lines += [f"Port:              {p.name or '<unset>'}  {p.port}/{p.protocol}",
                      f"TargetPort:        {p.target}/{p.protocol}"]
            if p.node_port:
                lines.append(f"NodePort:          {p.name or '<unset>'}  {p.node_port}/{p.protocol}")
            lines.append(f"Endpoints:         {','.join(str(e) for e in eps.get(p.name, [])) or '<none>'}")
        lines.append(f"Session Affinity:  {svc.session_affinity}")
        events = []
    elif resource in ingress_view.KINDS:
        ingress_view.describe(cluster, status, resource, name, namespace)
        return
    else:
        raise LabError(f"describe supports pod, node, service and ingress, not {kind}")
    typer.echo("\n".join(line for line in lines if line))
    if resource == "pods":
        typer.echo("Events:")
        if not events:
            typer.echo("  <none>")
        else:
            typer.echo(table(["  Type", "Reason", "Age", "Message"],
                             [["  " + e["type"], e["reason"], age(e["time"]), e["message"]] for e in events]))
