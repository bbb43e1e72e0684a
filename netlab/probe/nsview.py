"""One network namespace as the probes read it: routes the kernel would pick (`ip route get`
through netlink), addresses, neighbours, FDB entries and VXLAN settings, and the live
iptables tables. Read once per namespace and kept for the walk that needs them."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Optional

from ..kernel import netns
from . import rules

RTN_LOCAL = 2


@dataclass
class Route:
    kind: str                     # unicast | local | unreachable
    dev: str = ""
    via: str = ""
    error: str = ""

    def __str__(self) -> str:
        if self.kind == "unicast":
            return f"dev {self.dev}" + (f" via {self.via}" if self.via else "")
        return self.error or self.kind


class Namespace:
    """One namespace's netlink handle and what the walk reads from it, read once."""

    def __init__(self, name: str):
        self.name = name
        self.ipr = netns.open_netlink(name)
        self.links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()}
        self.index = {v: k for k, v in self.links.items()}
        self.addresses: dict[str, str] = {}
        for a in self.ipr.get_addr(family=socket.AF_INET):
            self.addresses.setdefault(self.links.get(a["index"], "?"), a.get_attr("IFA_ADDRESS"))
        self._tables: Optional[dict[str, rules.Table]] = None
        self._ipsets: Optional[dict[str, tuple[str, list[str]]]] = None

    @property
    def local(self) -> frozenset[str]:
        return frozenset(self.addresses.values())

    @property
    def ipsets(self) -> dict[str, tuple[str, list[str]]]:
        """The namespace's ipsets (calico's policy selectors), read once."""
        if self._ipsets is None:
            from ..kernel import ipset
            self._ipsets = ipset.read_all(self.name)
        return self._ipsets

    @property
    def tables(self) -> dict[str, rules.Table]:
        if self._tables is None:
            self._tables = rules.read(self.name)
        return self._tables

    def route(self, dst: str, src: str = "", iif: str = "") -> Route:
        query = {"dst": dst}
        if src and iif:
            query.update(src=src, iif=self.index[iif])
        try:
            msg = self.ipr.route("get", **query)[0]
        except Exception as exc:        # pyroute2's NetlinkError (code, text): unreachable, prohibited
            return Route("unreachable", error=f"no route ({exc.args[-1] if exc.args else exc})")
        if msg["type"] == RTN_LOCAL:
            return Route("local")
        return Route("unicast", self.links.get(msg.get_attr("RTA_OIF"), "?"), msg.get_attr("RTA_GATEWAY") or "")

    def neighbour(self, dev: str, ip: str) -> Optional[str]:
        for n in self.ipr.get_neighbours(ifindex=self.index[dev]):
            if n.get_attr("NDA_DST") == ip:
                return n.get_attr("NDA_LLADDR")
        return None

    def fdb(self, dev: str, mac: str) -> Optional[str]:
        for n in self.ipr.get_neighbours(family=socket.AF_BRIDGE, ifindex=self.index[dev]):
            if n.get_attr("NDA_LLADDR") == mac and n.get_attr("NDA_DST"):
                return n.get_attr("NDA_DST")
        return None

    def vxlan(self, dev: str) -> dict:
        link = self.ipr.get_links(self.index[dev])[0]
        return dict(link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")["attrs"])

    def close(self) -> None:
        self.ipr.close()
