"""A picture of a running lab: Graphviz DOT (rendered by `dot`) or Mermaid text, built from
the lab's model and status (what `netlab get` shows), so it can be read at a glance:
nodes as boxes holding their bridge, overlay device and pods; the underlay with the outside
client and the internet; the overlay between nodes; Services with arrows to their endpoints.

`stable=True` names an RC's pods <rc>-xxxxx (the README placeholder), so a lesson's committed
picture does not change with the random suffixes of a new run."""
from __future__ import annotations

import re
import shutil
import subprocess

from .model.errors import StateError

OVERLAY = {"vxlan": ("flannel.1", "VXLAN VNI 1, UDP 8472"),
           "udp": ("flannel0 (TUN) + flanneld", "UDP 8285 between flanneld"),
           "host-gw": (None, "routes via the node address"),
           "calico": ("BIRD (AS 64512)", "BGP sessions, TCP 179")}


def _q(s: str) -> str:
    return '"' + s.replace('"', r'\"') + '"'


def _id(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", s)


def describe(view, stable: bool = False) -> dict:
    """The topology as plain data (what both renderers draw)."""
    cluster = view.cluster
    backend = cluster.config.backend
    pods = []
    ids: dict[str, str] = {}
    for pod in sorted(view.pods, key=lambda p: (p.meta.namespace, p.meta.name)):
        name = pod.meta.name
        owner = (pod.meta.labels or {}) and re.fullmatch(r"(.+)-[a-z0-9]{5}", name)
        if stable and owner:
            name = owner.group(1) + "-xxxxx"
        ns = "" if pod.meta.namespace == "default" else f"{pod.meta.namespace}/"
        # In stable mode the drawing's ids carry no random suffix either.
        ident = f"{ns}{name}_{pod.pod_ip}" if stable else pod.meta.key
        ids[pod.meta.key] = ident
        pods.append({"key": ident, "label": f"{ns}{name}", "ip": pod.pod_ip,
                     "node": pod.spec.node_name})
    pods.sort(key=lambda p: (p["label"], tuple(int(x) for x in (p["ip"] or "0.0.0.0").split("."))))
    services = []
    for svc in view.services:
        if svc.meta.namespace == "default" and svc.meta.name == "kubernetes":
            continue
        ports = ",".join(f"{p.port}" + (f":{p.node_port}" if p.node_port else "") for p in svc.ports)
        eps = sorted({ids.get(ep.pod, ep.pod) for p in svc.ports for ep in view.endpoints(svc, p)})
        ns = "" if svc.meta.namespace == "default" else f"{svc.meta.namespace}/"
        services.append({"key": svc.meta.key, "label": f"svc {ns}{svc.meta.name}\n{svc.type} "
                         f"{svc.cluster_ip}:{ports}", "endpoints": eps})
    nodes = [{"name": n.name, "ip": n.internal_ip, "cidr": n.pod_cidr, "gw": n.gateway}
             for n in cluster.nodes]
    return {"lab": "course" if stable else view.name, "backend": backend, "proxy": view.proxy_mode, "nodes": nodes,
            "calicoPods": cluster.config.calico_pods, "canal": cluster.config.canal,
            "pods": pods, "services": services, "client": view.client_ip,
            "internet": view.internet_ip}


def to_dot(topo: dict) -> str:
    backend = topo["backend"]
    device, wire = OVERLAY.get(backend, (None, backend))
    routed = topo.get("calicoPods", backend == "calico")      # Calico's CNI plugin: no cni0
    title = f"lab {topo['lab']}: backend {backend}{' + Calico policy (Canal)' if topo.get('canal') else ''}, " \
            f"kube-proxy {topo['proxy']}"
    out = ["digraph lab {", "  rankdir=TB; newrank=true; compound=true;",
           '  graph [fontname="Helvetica", fontsize=11, labeljust=l];',
           '  node [fontname="Helvetica", fontsize=10, shape=box, style="rounded,filled", fillcolor=white];',
           '  edge [fontname="Helvetica", fontsize=9];',
           f'  label={_q(title)}; labelloc=t;']
    out.append('  subgraph cluster_underlay { label="underlay 192.168.56.0/24 (its own namespace)"; '
               'style="filled"; fillcolor="#eeeeee";')
    out.append('    br0 [label="br0\\nrouter .1", fillcolor="#dddddd"];')
    out.append(f'    client [label={_q("outside client " + topo["client"])}, fillcolor="#fff2cc"];')
    out.append(f'    internet [label={_q("internet " + topo["internet"] + chr(10) + "DNS example.net, web :80")}, '
               'fillcolor="#fff2cc"];')
    out.append("  }")
    out.append("  client -> br0 [dir=none]; br0 -> internet [dir=none];")
    for n in topo["nodes"]:
        nid = _id(n["name"])
        out.append(f'  subgraph cluster_{nid} {{ label={_q(n["name"] + "  eth0 " + n["ip"] + "  pods " + n["cidr"])}; '
                   'style="filled"; fillcolor="#dae8fc";')
        out.append(f'    {nid}_eth0 [label={_q("eth0 " + n["ip"])}, fillcolor="#dddddd"];')
        blabel = "cali veths, proxy_arp" if routed else f"cni0 {n['gw']}/24"
        out.append(f'    {nid}_br [label={_q(blabel)}, fillcolor="#d5e8d4"];')
        if device:
            out.append(f'    {nid}_ovl [label={_q(device)}, fillcolor="#f8cecc"];')
            out.append(f'    {nid}_br -> {nid}_ovl [dir=none, style=dashed, label="route"];')
        for p in topo["pods"]:
            if p["node"] == n["name"]:
                out.append(f'    {_id(p["key"])} [label={_q(p["label"] + chr(10) + (p["ip"] or ""))}];')
                out.append(f'    {_id(p["key"])} -> {nid}_br [dir=none, label="veth"];')
        out.append("  }")
        out.append(f"  {nid}_eth0 -> br0 [dir=none];")
        out.append(f"  {nid}_br -> {nid}_eth0 [style=invis];")
    nodes = topo["nodes"]
    for a, b in zip(nodes, nodes[1:]):
        left = f"{_id(a['name'])}_ovl" if device else f"{_id(a['name'])}_eth0"
        right = f"{_id(b['name'])}_ovl" if device else f"{_id(b['name'])}_eth0"
        out.append(f'  {left} -> {right} [dir=both, color="#b85450", penwidth=2, constraint=false, '
                   f'label={_q(wire)}, fontcolor="#b85450"];')
    for s in topo["services"]:
        sid = "svc_" + _id(s["key"])
        out.append(f'  {sid} [label={_q(s["label"])}, shape=ellipse, fillcolor="#e1d5e7"];')
        for ep in s["endpoints"]:
            out.append(f'  {sid} -> {_id(ep)} [style=dotted, color="#9673a6"];')
    out.append("}")
    return "\n".join(out) + "\n"


def to_mermaid(topo: dict) -> str:
    out = ["flowchart TB", '  client["outside client ' + topo["client"] + '"] --- br0["underlay br0"]',
           '  br0 --- internet["internet ' + topo["internet"] + '"]']
    for n in topo["nodes"]:
        nid = _id(n["name"])
        out.append(f'  subgraph {nid}["{n["name"]} {n["ip"]} pods {n["cidr"]}"]')
        routed = topo.get("calicoPods", topo["backend"] == "calico")
        out.append(f'    {nid}_br["cali veths, proxy_arp"]' if routed else f'    {nid}_br["cni0 {n["gw"]}"]')
        for p in topo["pods"]:
            if p["node"] == n["name"]:
                out.append(f'    {_id(p["key"])}["{p["label"]} {p["ip"] or ""}"] --- {nid}_br')
        out.append("  end")
        out.append(f"  {nid} --- br0")
    for s in topo["services"]:
        sid = "svc_" + _id(s["key"])
        out.append(f'  {sid}(["{s["label"].replace(chr(10), " ")}"])')
        out += [f"  {sid} -.-> {_id(ep)}" for ep in s["endpoints"]]
    return "\n".join(out) + "\n"


def render(dot: str, fmt: str) -> bytes:
    if not shutil.which("dot"):
        raise StateError("Graphviz is not installed (Debian package graphviz; scripts/setup.sh installs it)")
    done = subprocess.run(["dot", f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=60)
    if done.returncode:
        raise StateError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
