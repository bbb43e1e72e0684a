"""The overlay: a cross-node pod packet seen on the underlay, inside its VXLAN envelope (vxlan
backend) or as the bare payload of a flanneld UDP datagram (udp backend)."""
from __future__ import annotations

from typing import Any, Optional

from ...model import names
from .. import sockets
from ..capture import capture
from ..catalog import check
from ..lab import LabView, pod_label
from ..result import PACKET, SOCKET, Evidence
from ...plan.network import UDP_PORT
from . import DOC001, DOC003, DOC004

MAX_FRAMES = 24
CAPTURE_SECONDS = 3.0


def vxlan_frame(pkt: Any) -> Optional[dict]:
    """A VXLAN frame's outer and inner headers (runs in the capture child, after scapy loaded)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN

    if not pkt.haslayer(VXLAN):
        return None
    outer, udp, vx = pkt[IP], pkt[UDP], pkt[VXLAN]
    inner = vx.getlayer(IP)
    if inner is None:
        return None
    l4 = inner.payload
    sport, dport = getattr(l4, "sport", 0), getattr(l4, "dport", 0)
    flags = str(getattr(l4, "flags", ""))
    return {"outer_src": outer.src, "outer_dst": outer.dst, "udp_dport": udp.dport, "vni": vx.vni,
            "inner_src": inner.src, "inner_dst": inner.dst, "inner_sport": sport, "inner_dport": dport,
            "line": f"{outer.src}:{udp.sport} > {outer.dst}:{udp.dport} vxlan vni {vx.vni} | "
                    f"{inner.src}:{sport} > {inner.dst}:{dport} {l4.name} {flags}".rstrip()}


def _pair(view: LabView):
    """A cross-node pair policy allows (a denied one would prove nothing about the wire)."""
    return view.cross_node_pair()


@check("vxlan-encap",
       claim="Across nodes a pod's packet crosses the underlay inside VXLAN: UDP port 8472, VNI 1, "
             "outer addresses the two nodes', inner addresses the two pods' own, both ways.",
       source=f"{DOC004} §2.2 (flannel-vxlan), {DOC003} §4 (原封不动的传递到目标容器内), {DOC001}",
       needs="the vxlan backend and pods on two nodes, one with a TCP port",
       applies=lambda view: view.cluster.config.backend == "vxlan" and _pair(view) is not None,
       evidence=PACKET)
def vxlan_encap(view: LabView, ev: Evidence) -> str:
    cfg = view.cluster.config
    src, dst, port = _pair(view)
    a, b = view.node_of(src), view.node_of(dst)
    ports = [names.uplink(a.name), names.uplink(b.name)]
    out, frames = capture(view.underlay_netns, ports, vxlan_frame,
                          lambda: sockets.in_netns(view.netns(src), sockets.attempt_tcp, dst.pod_ip, port),
                          count=MAX_FRAMES, timeout=CAPTURE_SECONDS)
    # A refused connection still proves the overlay (the RST comes back encapsulated too).
    ev.add(pod_label(src), f"{dst.pod_ip}:{port} ({dst.meta.key})", "TCP connect",
           out.seen, out.ok or out.seen == "connection refused", "an answer", kind=SOCKET)
    sent = f"capture on underlay ports {', '.join(ports)} (at most {MAX_FRAMES} frames, {CAPTURE_SECONDS:g}s)"
    for label, outer, inner in (("there", (a.internal_ip, b.internal_ip), (src.pod_ip, dst.pod_ip)),
                                ("back", (b.internal_ip, a.internal_ip), (dst.pod_ip, src.pod_ip))):
        want = dict(outer_src=outer[0], outer_dst=outer[1], udp_dport=cfg.vxlan_port, vni=cfg.vxlan_vni,
                    inner_src=inner[0], inner_dst=inner[1])
        hit = next((f for f in frames if all(f[k] == v for k, v in want.items())), None)
        expected = (f"{outer[0]} > {outer[1]}:{cfg.vxlan_port} vxlan vni {cfg.vxlan_vni} | "
                    f"{inner[0]} > {inner[1]}")
        seen = hit["line"] if hit else ("; ".join(f["line"] for f in frames[:3]) or "no VXLAN frame")
        ev.add(f"underlay ({label})", f"{b.name if label == 'there' else a.name}", sent, seen,
               hit is not None, expected, kind=PACKET)
    return f"{a.name} -> {b.name}: VXLAN vni {cfg.vxlan_vni} on UDP {cfg.vxlan_port}, pod addresses inside"


def udp_frame(pkt: Any) -> Optional[dict]:
    """A flanneld datagram: UDP 8285 whose payload parses as the inner IP packet (flannel's udp
    backend adds no header of its own). Runs in the capture child, after scapy loaded."""
    from scapy.layers.inet import IP, UDP

    if not pkt.haslayer(UDP):
        return None
    outer, udp = pkt[IP], pkt[UDP]
    if UDP_PORT not in (udp.sport, udp.dport):
        return None
    raw = bytes(udp.payload)
    if len(raw) < 20 or raw[0] >> 4 != 4:
        return None
    inner = IP(raw)
    l4 = inner.payload
    sport, dport = getattr(l4, "sport", 0), getattr(l4, "dport", 0)
    flags = str(getattr(l4, "flags", ""))
    return {"outer_src": outer.src, "outer_dst": outer.dst, "udp_sport": udp.sport, "udp_dport": udp.dport,
            "inner_src": inner.src, "inner_dst": inner.dst, "inner_sport": sport, "inner_dport": dport,
            "inner_len": inner.len, "payload_len": len(raw),
            "line": f"{outer.src}:{udp.sport} > {outer.dst}:{udp.dport} udp {len(raw)} | "
                    f"{inner.src}:{sport} > {inner.dst}:{dport} {l4.name} {flags}".rstrip()}


@check("udp-encap",
       claim="With flannel's udp backend a pod's packet crosses the underlay as the payload of a UDP "
             "datagram between the two nodes' flanneld (port 8285 at both ends, node addresses outside), "
             "the whole inner IP packet with the two pods' own addresses inside, both ways.",
       source=f"{DOC004} §2.2 (图3 flannel-udp), {DOC003} (默认的节点间数据通信方式是UDP转发), "
              f"{DOC001} (flannel的原理是将网络包封装在udp里面)",
       needs="the udp backend and pods on two nodes, one with a TCP port",
       applies=lambda view: view.cluster.config.backend == "udp" and _pair(view) is not None,
       evidence=PACKET)
def udp_encap(view: LabView, ev: Evidence) -> str:
    src, dst, port = _pair(view)
    a, b = view.node_of(src), view.node_of(dst)
    ports = [names.uplink(a.name), names.uplink(b.name)]
    out, frames = capture(view.underlay_netns, ports, udp_frame,
                          lambda: sockets.in_netns(view.netns(src), sockets.attempt_tcp, dst.pod_ip, port),
                          count=MAX_FRAMES, timeout=CAPTURE_SECONDS)
    ev.add(pod_label(src), f"{dst.pod_ip}:{port} ({dst.meta.key})", "TCP connect",
           out.seen, out.ok or out.seen == "connection refused", "an answer", kind=SOCKET)
    sent = f"capture on underlay ports {', '.join(ports)} (at most {MAX_FRAMES} frames, {CAPTURE_SECONDS:g}s)"
    for label, outer, inner in (("there", (a.internal_ip, b.internal_ip), (src.pod_ip, dst.pod_ip)),
                                ("back", (b.internal_ip, a.internal_ip), (dst.pod_ip, src.pod_ip))):
        want = dict(outer_src=outer[0], outer_dst=outer[1], udp_sport=UDP_PORT, udp_dport=UDP_PORT,
                    inner_src=inner[0], inner_dst=inner[1])
        # The payload is the inner packet and nothing else: its IP total length is the datagram's.
        hit = next((f for f in frames if all(f[k] == v for k, v in want.items())
                    and f["inner_len"] == f["payload_len"]), None)
        expected = f"{outer[0]}:{UDP_PORT} > {outer[1]}:{UDP_PORT} udp | {inner[0]} > {inner[1]} (whole payload)"
        seen = hit["line"] if hit else ("; ".join(f["line"] for f in frames[:3]) or "no UDP 8285 datagram")
        ev.add(f"underlay ({label})", f"{b.name if label == 'there' else a.name}", sent, seen,
               hit is not None, expected, kind=PACKET)
    return f"{a.name} -> {b.name}: UDP {UDP_PORT} between flanneld, pod addresses inside"
