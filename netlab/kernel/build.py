"""Apply network plans to the kernel with netlink: one long-lived handle per namespace."""
from __future__ import annotations

import os
from typing import Iterable

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import states as nud_states

from ..plan.network import NsPlan
from . import netns
from .netns import KernelError

RTNH_F_ONLINK = 4


class Builder:
    """Applies NsPlans phase by phase, so a veth created from one namespace can be configured
    in the other; keeps one netlink handle per namespace for the whole run."""

    def __init__(self):
        self._handles: dict = {}
        self._indexes: dict[str, dict[str, int]] = {}     # netns -> device name -> ifindex

    def __enter__(self) -> "Builder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def handle(self, name: str):
        if name not in self._handles:
            self._handles[name] = netns.open_netlink(name)
        return self._handles[name]

    def forget(self, name: str) -> None:
        self._indexes.pop(name, None)
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.close()

    def index(self, ns: str, dev: str) -> int:
        """Interface index by name, from one dump per namespace (a lookup per call is slow)."""
        table = self._indexes.get(ns)
        if table is None or dev not in table:
            table = {link.get("ifname"): link["index"] for link in self.handle(ns).get_links()}
            self._indexes[ns] = table
        if dev not in table:
            raise KernelError(f"device {dev} not found in {ns}")
        return table[dev]

    # ------------------------------------------------------------------ phases

    def apply(self, plans: Iterable[NsPlan], create_netns: Iterable[str] = ()) -> None:
        plans = list(plans)
        for name in create_netns:
            netns.create(name)
        for plan in plans:
            self._links(plan)
        for plan in plans:
            self._indexes.pop(plan.netns, None)     # devices arrived: re-read names once
        for plan in plans:
            self._devices(plan)
        for plan in plans:
            self._addresses(plan)
        for plan in plans:
            self._routes(plan)
        for plan in plans:
            if plan.sysctls:
                netns.write_sysctl(plan.netns, plan.sysctls)

    def _step(self, plan: NsPlan, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NetlinkError as exc:
            raise KernelError(f"{plan.netns}: {what}: {os.strerror(exc.code)}") from None

    def _links(self, plan: NsPlan) -> None:
        ipr = self.handle(plan.netns)
        devices = {d.name: d for d in plan.devices}
        for link in plan.links:
            spec: dict = {"ifname": link.name, "kind": link.kind}
            peer_fd = None
            if link.kind == "veth":
                peer_fd = os.open(netns.netns_path(link.peer_netns), os.O_RDONLY | os.O_CLOEXEC)
                spec["peer"] = {"ifname": link.peer, "net_ns_fd": peer_fd}
                dev = devices.get(link.name)
                if dev and dev.master and not dev.mac:
                    # One request instead of two: the port is born up, sized and enslaved.
                    spec.update(state="up", master=self.index(plan.netns, dev.master))
                    if dev.mtu:
                        spec["mtu"] = dev.mtu
            elif link.kind == "vxlan":
                spec.update(vxlan_id=link.vxlan_id, vxlan_local=link.vxlan_local,
                            vxlan_port=link.vxlan_port, vxlan_learning=0,
                            vxlan_link=self.index(plan.netns, link.vxlan_dev))
            elif link.kind == "bridge":
                spec.update(br_forward_delay=0, br_stp_state=0)
            try:
                self._step(plan, f"create {link.kind} {link.name}", ipr.link, "add", **spec)
            finally:
                if peer_fd is not None:
                    os.close(peer_fd)

    def _devices(self, plan: NsPlan) -> None:
        ipr = self.handle(plan.netns)
        born_ready = {link.name for link in plan.links if link.kind == "veth"}
        # Bridges first, so that ports join a bridge that is already up.
        for dev in sorted(plan.devices, key=lambda d: bool(d.master)):
            idx = self.index(plan.netns, dev.name)
            if dev.name in born_ready and dev.master and not dev.mac:
                if dev.hairpin:
                    self._step(plan, f"hairpin on {dev.name}", ipr.brport, "set", index=idx, mode=1)
                continue
            attrs: dict = {"state": "up"}
            if dev.mtu:
                attrs["mtu"] = dev.mtu
            if dev.mac:
                attrs["address"] = dev.mac
            if dev.master:
                attrs["master"] = self.index(plan.netns, dev.master)
            self._step(plan, f"configure {dev.name}", ipr.link, "set", index=idx, **attrs)
            if dev.hairpin:
                # kubelet's hairpin-veth mode: a pod can reach itself through its service.
                self._step(plan, f"hairpin on {dev.name}", ipr.brport, "set", index=idx, mode=1)

    def _addresses(self, plan: NsPlan) -> None:
        ipr = self.handle(plan.netns)
        for dev, cidr in plan.addresses:
            address, prefix = cidr.split("/")
            self._step(plan, f"address {cidr} on {dev}", ipr.addr, "add",
                       index=self.index(plan.netns, dev), address=address, prefixlen=int(prefix))

    def _routes(self, plan: NsPlan) -> None:
        ipr = self.handle(plan.netns)
        for route in plan.routes:
            spec: dict = {"dst": "0.0.0.0/0" if route.dst == "default" else route.dst}
            if route.multipath:
                spec["multipath"] = [{"gateway": hop} for hop in route.multipath]
            if route.via:
                spec["gateway"] = route.via
            if route.dev:
                spec["oif"] = self.index(plan.netns, route.dev)
            if route.onlink:
                spec["flags"] = RTNH_F_ONLINK
            self._step(plan, f"route {route.dst}", ipr.route, "add", **spec)
        for n in plan.neighbours:
            self._step(plan, f"neighbour {n.ip}", ipr.neigh, "add", dst=n.ip, lladdr=n.mac,
                       ifindex=self.index(plan.netns, n.dev), state=nud_states["permanent"])
        for f in plan.fdb:
            self._step(plan, f"fdb {f.mac}", ipr.fdb, "append", ifindex=self.index(plan.netns, f.dev),
                       lladdr=f.mac, dst=f.dst, state=nud_states["permanent"])
