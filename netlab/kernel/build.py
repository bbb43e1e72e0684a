"""Apply network plans to the kernel: batched rtnetlink, one socket per namespace."""
from __future__ import annotations

import errno
import os
from typing import Iterable

from ..plan.network import NsPlan
from . import netns, tun
from .netns import KernelError
from .rtnl import RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, Batch, NetlinkError


class Builder:
    """Applies NsPlans phase by phase (links, devices, addresses, routes), so a veth created
    from one namespace can be configured in the other. Within a phase, all requests for one
    namespace go to the kernel as one batch."""

    def __init__(self):
        self._sockets: dict = {}
        self._indexes: dict[str, dict[str, int]] = {}     # netns -> device name -> ifindex

    def __enter__(self) -> "Builder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def forget(self, name: str) -> None:
        self._indexes.pop(name, None)
        sock = self._sockets.pop(name, None)
        if sock is not None:
            sock.close()

    def remove_links(self, ns: str, names: Iterable[str]) -> None:
        """Delete devices now. A deleted namespace takes its veth ends along only when the
        kernel gets round to it, and a pod made again at once needs the same host-side name."""
        for name in names:
            batch = Batch()
            batch.link_del(name)
            try:
                batch.commit(self._socket(ns))
            except NetlinkError as exc:
                if exc.errno != errno.ENODEV:
                    raise KernelError(f"{ns}: {exc.strerror}") from None

    def change_routing(self, netns_name: str, add: NsPlan, remove: NsPlan) -> None:
        """A running namespace follows a node that joined or left (plan/nodedelta.py): what
        `remove` lists is deleted (already gone is fine), then what `add` lists is added or
        replaces the entry with the same destination."""
        batch = Batch()
        for route in remove.routes:
            batch.route_del(route.dst)
        for n in remove.neighbours:
            batch.neigh_del(self.index(netns_name, n.dev), n.ip)
        for f in remove.fdb:
            batch.fdb_del(self.index(netns_name, f.dev), f.mac, f.dst)
        self._commit_batch(netns_name, batch, ignore=(errno.ESRCH, errno.ENOENT))
        for route in add.routes:
            batch.route_add(route.dst, via=route.via, onlink=route.onlink, multipath=tuple(route.multipath),
                            oif=self.index(netns_name, route.dev) if route.dev else 0,
                            scope=RT_SCOPE_LINK if route.scope == "link" else RT_SCOPE_UNIVERSE, replace=True)
        for n in add.neighbours:
            batch.neigh_add(self.index(netns_name, n.dev), n.ip, n.mac, replace=True)
        for f in add.fdb:
            batch.fdb_append(self.index(netns_name, f.dev), f.mac, f.dst)
        self._commit_batch(netns_name, batch, ignore=(errno.EEXIST,))

    def forget_neighbour(self, netns_name: str, dev: str, ip: str) -> None:
        """Drop what ARP learned about an address (a node that left: the next one to get its
        address has another MAC). Nothing learned, or no such device, is fine."""
        try:
            idx = self.index(netns_name, dev)
        except KernelError:
            return
        batch = Batch()
        batch.neigh_del(idx, ip)
        self._commit_batch(netns_name, batch, ignore=(errno.ESRCH, errno.ENOENT))

    def _commit_batch(self, ns: str, batch: Batch, ignore: tuple[int, ...] = ()) -> None:
        try:
            batch.commit(self._socket(ns), ignore=ignore)
        except NetlinkError as exc:
            raise KernelError(f"{ns}: {exc.strerror}") from None

    def _socket(self, name: str):
        if name not in self._sockets:
            self._sockets[name] = netns.open_rtnl_socket(name)
        return self._sockets[name]

    def index(self, ns: str, dev: str) -> int:
        """Interface index by name, cached (looked up with an ioctl inside the namespace)."""
        table = self._indexes.setdefault(ns, {})
        if dev not in table:
            table.update(netns.ifindexes(ns, [dev]))
        if dev not in table:
            raise KernelError(f"device {dev} not found in {ns}")
        return table[dev]

    def _prefetch(self, ns: str, devices: Iterable[str]) -> None:
        table = self._indexes.setdefault(ns, {})
        missing = [d for d in devices if d not in table]
        if missing:
            table.update(netns.ifindexes(ns, missing))

    # ------------------------------------------------------------------ phases

    def apply(self, plans: Iterable[NsPlan], create_netns: Iterable[str] = ()) -> None:
        plans = list(plans)
        for name in create_netns:
            netns.create(name)
        # Links namespace by namespace in plan order: a vxlan device needs the eth0 that the
        # underlay's veth put into its node.
        for plan in plans:
            self._commit(plan.netns, self._links, plan)
        by_ns: dict[str, list[NsPlan]] = {}
        for plan in plans:
            by_ns.setdefault(plan.netns, []).append(plan)
        for ns, group in by_ns.items():
            self._prefetch(ns, [d.name for p in group for d in p.devices])
        for phase in (self._devices, self._addresses, self._routes):
            for ns, group in by_ns.items():
                self._commit(ns, phase, *group)
        # One write per namespace: a node with many pods (calico's per-veth sysctls) needs
        # one trip into it, not one per pod.
        sysctls: dict[str, dict[str, str]] = {}
        for plan in plans:
            sysctls.setdefault(plan.netns, {}).update(plan.sysctls)
        for ns, values in sysctls.items():
            if values:
                netns.write_sysctl(ns, values)

    def _commit(self, ns: str, phase, *plans: NsPlan) -> None:
        batch = Batch()
        for plan in plans:
            phase(plan, batch)
        try:
            batch.commit(self._socket(ns))
        except NetlinkError as exc:
            raise KernelError(f"{ns}: {exc.strerror}") from None

    def _links(self, plan: NsPlan, batch: Batch) -> None:
        devices = {d.name: d for d in plan.devices}
        for link in plan.links:
            if link.kind == "veth":
                dev = devices.get(link.name)
                # Born configured when it can be: up, sized and on its bridge in one request.
                ready = bool(dev and dev.master and not dev.mac)
                fd = os.open(netns.netns_path(link.peer_netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    batch.veth_add(link.name, link.peer, fd, mtu=(dev.mtu or 0) if ready else 0,
                                   master=self.index(plan.netns, dev.master) if ready else 0, up=ready)
                    batch.commit(self._socket(plan.netns))      # the fd must outlive the request
                finally:
                    os.close(fd)
            elif link.kind == "vxlan":
                batch.vxlan_add(link.name, link.vxlan_id, link.vxlan_local, link.vxlan_port,
                                self.index(plan.netns, link.vxlan_dev))
            elif link.kind == "tun":
                tun.create_persistent(plan.netns, link.name)     # an ioctl: not a netlink request
            elif link.kind == "bridge":
                batch.bridge_add(link.name)
                batch.commit(self._socket(plan.netns))          # its ports name it as master

    def _devices(self, plan: NsPlan, batch: Batch) -> None:
        born_ready = {link.name for link in plan.links if link.kind == "veth"}
        # Bridges first, so that ports join a bridge that is already up.
        for dev in sorted(plan.devices, key=lambda d: bool(d.master)):
            idx = self.index(plan.netns, dev.name)
            if not (dev.name in born_ready and dev.master and not dev.mac):
                batch.link_set(idx, dev.name, mtu=dev.mtu or 0, address=dev.mac,
                               master=self.index(plan.netns, dev.master) if dev.master else 0)
            if dev.hairpin:
                # kubelet's hairpin-veth mode: a pod can reach itself through its service.
                batch.hairpin(idx, dev.name)

    def _addresses(self, plan: NsPlan, batch: Batch) -> None:
        for dev, cidr in plan.addresses:
            batch.addr_add(self.index(plan.netns, dev), cidr, dev)

    def _routes(self, plan: NsPlan, batch: Batch) -> None:
        for route in plan.routes:
            batch.route_add(route.dst, via=route.via, onlink=route.onlink, multipath=tuple(route.multipath),
                            oif=self.index(plan.netns, route.dev) if route.dev else 0,
                            scope=RT_SCOPE_LINK if route.scope == "link" else RT_SCOPE_UNIVERSE)
        for n in plan.neighbours:
            batch.neigh_add(self.index(plan.netns, n.dev), n.ip, n.mac)
        for f in plan.fdb:
            batch.fdb_append(self.index(plan.netns, f.dev), f.mac, f.dst)
