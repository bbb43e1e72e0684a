"""Where the kernel sent a connection: one conntrack entry, looked up by its original tuple.

A node that translated a connection to a service (DNAT) keeps a conntrack entry whose reply
tuple names the endpoint (its source) and the address the endpoint answers to (its
destination: the client, or the node's own address when the rules masqueraded). Asking for
that one entry (ctnetlink IPCTNL_MSG_CT_GET, an exact lookup) costs the same whatever the
lab's size, where finding the connection on the servers' side means reading every endpoint's
socket table. landing.py asks here first, then reads only the endpoint named.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Optional

from ..kernel import netns as netns_mod

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET = 1, 0, 1
NLM_F_REQUEST, NLMSG_ERROR, NLA_F_NESTED = 1, 2, 0x8000
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY = 1, 2
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3


def _attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind | (NLA_F_NESTED if nested else 0))
    return head + payload + bytes(-len(payload) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    found, pos = {}, 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        found[kind & ~NLA_F_NESTED] = data[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return found


def _tuple(src: str, sport: int, dst: str, dport: int) -> bytes:
    ip = _attr(CTA_IP_V4_SRC, socket.inet_aton(src)) + _attr(CTA_IP_V4_DST, socket.inet_aton(dst))
    proto = (_attr(CTA_PROTO_NUM, bytes([socket.IPPROTO_TCP])) + _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
             + _attr(CTA_PROTO_DST_PORT, struct.pack("!H", dport)))
    return _attr(CTA_TUPLE_IP, ip, nested=True) + _attr(CTA_TUPLE_PROTO, proto, nested=True)


def _parse_tuple(data: bytes) -> tuple[str, int, str, int]:
    parts = _attrs(data)
    ip, proto = _attrs(parts[CTA_TUPLE_IP]), _attrs(parts[CTA_TUPLE_PROTO])
    return (socket.inet_ntoa(ip[CTA_IP_V4_SRC]), struct.unpack("!H", proto[CTA_PROTO_SRC_PORT])[0],
            socket.inet_ntoa(ip[CTA_IP_V4_DST]), struct.unpack("!H", proto[CTA_PROTO_DST_PORT])[0])


class Conntrack:
    """ctnetlink sockets in some namespaces (the lab's nodes), for exact lookups."""

    def __init__(self, namespaces: list[str]):
        self.socks: dict[str, socket.socket] = {}
        self.seq = 0
        for ns in namespaces:
            def make() -> int:
                netns_mod.enter(ns)
                return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER).detach()
            try:
                sock = socket.socket(fileno=netns_mod.in_thread(make))
            except (OSError, netns_mod.LabError):
                continue
            sock.settimeout(1.0)
            self.socks[ns] = sock

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def reply(self, ns: str, src: str, sport: int, dst: str, dport: int) -> Optional[tuple[str, int, str, int]]:
        """The reply tuple (src, sport, dst, dport) of the TCP connection src:sport -> dst:dport
        in namespace `ns`'s conntrack, or None if it has no such entry."""
        sock = self.socks.get(ns)
        if sock is None:
            return None
        self.seq += 1
        body = struct.pack("=BBH", socket.AF_INET, 0, 0) + _attr(CTA_TUPLE_ORIG, _tuple(src, sport, dst, dport), True)
        kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
        sock.send(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST, self.seq, 0) + body)
        while True:
            data = sock.recv(65536)
            _length, msg_type, _flags, seq, _pid = struct.unpack_from("=IHHII", data, 0)
            if seq != self.seq:
                continue
            if msg_type == NLMSG_ERROR:
                error = struct.unpack_from("=i", data, 16)[0]
                if error in (0, -errno.ENOENT):
                    return None
                raise OSError(-error, os.strerror(-error))
            attrs = _attrs(data[20:])            # after nlmsghdr (16) and nfgenmsg (4)
            return _parse_tuple(attrs[CTA_TUPLE_REPLY]) if CTA_TUPLE_REPLY in attrs else None

    def endpoint(self, src: str, sport: int, dst: str, dport: int) -> Optional[tuple[str, int, str, int]]:
        """Where a connection to dst:dport was translated to, asked of every namespace: the
        reply tuple of the entry whose reply does not come from dst:dport (the DNAT)."""
        for ns in self.socks:
            found = self.reply(ns, src, sport, dst, dport)
            if found and (found[0], found[1]) != (dst, dport):
                return found
        return None
