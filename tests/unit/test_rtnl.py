"""kernel/rtnl.py, the batched rtnetlink writer, checked against pyroute2 (no root, no kernel).

Every request is compiled by rtnl.Batch.commit into a fake socket that records the bytes
and answers each request with an ack, the way the kernel does. Each message is then:

1. decoded with pyroute2's own parser (ifinfmsg, ifaddrmsg, rtmsg, ndmsg) and compared,
   header, fixed fields and every attribute (nested ones included), with what was asked;
2. compared byte for byte, attribute by attribute, with what pyroute2 encodes for the same
   request. The one intended difference is NLA_F_NESTED, which rtnl.py sets on nested
   attributes and pyroute2 does not; it is checked on its own (the bridge code in the kernel
   needs it on IFLA_PROTINFO: without it, the attribute is read as a port state).
"""
from __future__ import annotations

import errno
import socket
import struct

import pytest
from pyroute2.netlink import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_SETLINK,
    rt_proto,
    rt_scope,
    rt_type,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import RTNH_F_ONLINK, rtmsg

from netlab.kernel import netns, rtnl

CLASSES = {RTM_NEWLINK: ifinfmsg, RTM_DELLINK: ifinfmsg, RTM_SETLINK: ifinfmsg,
           RTM_NEWADDR: ifaddrmsg, RTM_NEWROUTE: rtmsg, RTM_NEWNEIGH: ndmsg,
           RTM_DELROUTE: rtmsg, RTM_DELNEIGH: ndmsg}
FIXED = {ifinfmsg: 16, ifaddrmsg: 8, rtmsg: 12, ndmsg: 12}      # the struct after nlmsghdr
NEW = NLM_F_CREATE | NLM_F_EXCL
RT_TABLE_MAIN = 254

# What the kernel does with acks, measured with `unshare -n` on Linux 6.18: each ack is a
# separate skb of ~768 bytes of truesize, the receive buffer (rmem_default) is 212992 bytes,
# and an ack that does not fit is dropped, the next recv failing with ENOBUFS. One batch of
# 250 requests passed; 400 failed.
RCVBUF, ACK_TRUESIZE = 212992, 768


# ---------------------------------------------------------------------------- fake kernel

class FakeKernel:
    """Stands in for an rtnetlink socket: records what is sent, acks every request in order
    (with `errors[seq index] = errno` as a failure), and models the receive buffer."""

    def __init__(self, errors: dict[int, int] | None = None, acks_per_recv: int = 1):
        self.sends: list[bytes] = []
        self.queue: list[bytes] = []
        self.errors = errors or {}
        self.acks_per_recv = acks_per_recv
        self.overrun = False
        self.seen = 0

    def send(self, data: bytes) -> int:
        self.sends.append(bytes(data))
        for raw in split(data):
            seq = struct.unpack_from("=I", raw, 8)[0]
            code = self.errors.get(self.seen, 0)
            self.seen += 1
            # an error ack echoes the whole request, a success ack only its header
            echo = raw if code else raw[:16]
            ack = struct.pack("=IHHIIi", 20 + len(echo), NLMSG_ERROR, 0 if code else 0x100, seq, 0,
                              -code) + echo
            if (len(self.queue) + 1) * ACK_TRUESIZE > RCVBUF:
                self.overrun = True            # dropped, as netlink_attachskb drops it
            else:
                self.queue.append(ack)
        return len(data)

    def recv(self, bufsize: int) -> bytes:
        if self.overrun:
            self.overrun = False
            raise OSError(errno.ENOBUFS, "No buffer space available")
        if not self.queue:
            raise AssertionError("recv with no ack pending: the writer would block for ever")
        out = b"".join(self.queue[:self.acks_per_recv])
        del self.queue[:self.acks_per_recv]
        return out


def split(data: bytes) -> list[bytes]:
    """Messages of a netlink buffer, by their nlmsg_len (which must be 4-aligned and exact)."""
    out, offset = [], 0
    while offset < len(data):
        length = struct.unpack_from("=I", data, offset)[0]
        assert length >= 16 and length % 4 == 0 and offset + length <= len(data)
        out.append(bytes(data[offset:offset + length]))
        offset += length
    assert offset == len(data)
    return out


def compile_batch(fill) -> list[bytes]:
    batch = rtnl.Batch()
    fill(batch)
    kernel = FakeKernel()
    batch.commit(kernel)
    assert batch.requests == [] and kernel.queue == []
    return [m for chunk in kernel.sends for m in split(chunk)]


def compile_one(fill) -> bytes:
    messages = compile_batch(fill)
    assert len(messages) == 1
    return messages[0]


# ---------------------------------------------------------------------------- decoding

def plain(obj):
    """A decoded pyroute2 message or attribute as plain data: fields and (name, value) attrs.
    Drops only padding fields and ifinfmsg's 'state', which pyroute2 derives from flags."""
    if isinstance(obj, list):
        return [plain(x) for x in obj]
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key.startswith("__") or key == "header" or (key == "state" and "ifi_type" in obj):
                continue
            out[key] = [(a[0], plain(a[1])) for a in value] if key == "attrs" else plain(value)
        return out
    return obj


def decode(raw: bytes):
    msg = CLASSES[struct.unpack_from("=H", raw, 4)[0]](raw)
    msg.decode()
    return msg


def raw_attrs(buf: bytes, offset: int = 0) -> list[tuple[int, bytes]]:
    """(type with its flags, payload) of each attribute; lengths and padding must be exact."""
    out = []
    while offset < len(buf):
        length, kind = struct.unpack_from("=HH", buf, offset)
        assert length >= 4 and offset + length <= len(buf), f"bad attribute length {length}"
        out.append((kind, buf[offset + 4:offset + length]))
        padded = (length + 3) & ~3
        assert buf[offset + length:offset + padded] == b"\0" * (padded - length)
        offset += padded
    assert offset == len(buf)
    return out


def unflag(buf: bytes, offset: int, path: tuple = ()) -> tuple[bytes, set[tuple[int, ...]]]:
    """`buf` with NLA_F_NESTED cleared from offset on (descending into flagged attributes),
    and the paths of attribute types that carried it."""
    out, flagged = bytearray(buf[:offset]), set()
    for kind, payload in raw_attrs(buf, offset):
        if kind & NLA_F_NESTED:
            kind &= ~NLA_F_NESTED
            flagged.add(path + (kind,))
            payload, inner = unflag(payload, 0, path + (kind,))
            flagged |= inner
        length = 4 + len(payload)
        out += struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)
    return bytes(out), flagged


def pyroute2_encode(msg_type: int, nl_flags: int, seq: int, spec: dict) -> bytes:
    """What pyroute2's own message class encodes for the same request."""
    msg = CLASSES[msg_type]()
    msg["header"] = {"type": msg_type, "flags": nl_flags, "sequence_number": seq, "pid": 0}
    for key, value in spec.items():
        msg[key] = value
    msg.encode()
    return bytes(msg.data)


def check(raw: bytes, msg_type: int, nl_flags: int, expected: dict, nested: set) -> None:
    """The full comparison, for one compiled message."""
    # header: length, type, flags, pid (the sequence number is checked with batching)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    assert (length, kind, flags, pid) == (len(raw), msg_type, NLM_F_REQUEST | NLM_F_ACK | nl_flags, 0)
    # 1. pyroute2's parser: every fixed field and every attribute, in order
    msg = decode(raw)
    assert msg["header"]["type"] == msg_type
    assert msg["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK | nl_flags
    assert msg["header"]["length"] == len(raw)
    assert plain(msg) == expected
    # 2. pyroute2's encoder: the same bytes, NLA_F_NESTED apart
    cls = CLASSES[msg_type]
    ours, flagged = unflag(raw, 16 + FIXED[cls])
    assert flagged == nested
    theirs = pyroute2_encode(msg_type, NLM_F_REQUEST | NLM_F_ACK | nl_flags, seq, expected)
    fixed = 16 + FIXED[cls]
    assert ours[:fixed] == theirs[:fixed], "nlmsghdr or fixed header differs from pyroute2's"
    assert [(k, p.hex()) for k, p in raw_attrs(ours, fixed)] == \
           [(k, p.hex()) for k, p in raw_attrs(theirs, fixed)]
    assert ours == theirs


def link(attrs, *, index=0, family=0, flags=0, change=0) -> dict:
    return {"family": family, "ifi_type": 0, "index": index, "flags": flags, "change": change,
            "attrs": list(attrs)}


def linkinfo(kind: str, *data) -> tuple:
    inner = [("IFLA_INFO_KIND", kind)]
    if data:
        inner.append(("IFLA_INFO_DATA", {"attrs": list(data)}))
    return ("IFLA_LINKINFO", {"attrs": inner})


LINKINFO = (rtnl.IFLA_LINKINFO,)
INFO_DATA = (rtnl.IFLA_LINKINFO, rtnl.IFLA_INFO_DATA)


# ---------------------------------------------------------------------------- constants

def test_constants_match_pyroute2():
    assert (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK, rtnl.RTM_SETLINK, rtnl.RTM_NEWADDR,
            rtnl.RTM_NEWROUTE, rtnl.RTM_NEWNEIGH) == (RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK,
                                                      RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH)
    assert (rtnl.NLM_F_REQUEST, rtnl.NLM_F_ACK, rtnl.NLM_F_EXCL, rtnl.NLM_F_CREATE,
            rtnl.NLM_F_APPEND) == (NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND)
    assert (rtnl.NLMSG_ERROR, rtnl.NLA_F_NESTED, rtnl.IFF_UP) == (NLMSG_ERROR, NLA_F_NESTED, IFF_UP)
    assert (rtnl.NUD_PERMANENT, rtnl.NTF_SELF, rtnl.RTNH_F_ONLINK) == (NUD_PERMANENT, NTF_SELF,
                                                                       RTNH_F_ONLINK)
    assert (rtnl.RTPROT_STATIC, rtnl.RT_SCOPE_UNIVERSE, rtnl.RTN_UNICAST) == (
        rt_proto["static"], rt_scope["universe"], rt_type["unicast"])
    assert rtnl.AF_BRIDGE == socket.AF_BRIDGE
    # Attribute numbers need no list here: pyroute2 names each decoded attribute by its
    # number, and every test below compares those names.


# ---------------------------------------------------------------------------- links

@pytest.mark.parametrize("mtu, master, up", [(0, 0, False), (1450, 3, True), (65535, 2**31 - 1, True)])
@pytest.mark.parametrize("name, peer", [("v", "eth0"), ("veth0123456789a", "p"), ("abcd", "abcde")])
def test_veth_add(name, peer, mtu, master, up):
    raw = compile_one(lambda b: b.veth_add(name, peer, 7, mtu=mtu, master=master, up=up))
    peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", 7)] + ([("IFLA_MTU", mtu)] if mtu else [])
    attrs = [("IFLA_IFNAME", name),
             linkinfo("veth", ("VETH_INFO_PEER", link(peer_attrs)))]
    attrs += [("IFLA_MTU", mtu)] if mtu else []
    attrs += [("IFLA_MASTER", master)] if master else []
    check(raw, RTM_NEWLINK, NEW, link(attrs, flags=IFF_UP if up else 0, change=IFF_UP if up else 0),
          {LINKINFO, INFO_DATA})


@pytest.mark.parametrize("name", ["cni0", "br", "underlay-br0123"])
def test_bridge_add(name):
    raw = compile_one(lambda b: b.bridge_add(name))
    attrs = [("IFLA_IFNAME", name),
             linkinfo("bridge", ("IFLA_BR_FORWARD_DELAY", 0), ("IFLA_BR_STP_STATE", 0))]
    check(raw, RTM_NEWLINK, NEW, link(attrs), {LINKINFO, INFO_DATA})


@pytest.mark.parametrize("vni, local, port, dev", [(1, "192.168.56.11", 8472, 2),
                                                  (2**24 - 1, "10.0.0.1", 4789, 300),
                                                  (42, "203.0.113.254", 65535, 1)])
def test_vxlan_add(vni, local, port, dev):
    raw = compile_one(lambda b: b.vxlan_add("flannel.1", vni, local, port, dev))
    attrs = [("IFLA_IFNAME", "flannel.1"),
             linkinfo("vxlan", ("IFLA_VXLAN_ID", vni), ("IFLA_VXLAN_LINK", dev),
                      ("IFLA_VXLAN_LOCAL", local), ("IFLA_VXLAN_LEARNING", 0),
                      ("IFLA_VXLAN_PORT", port))]
    check(raw, RTM_NEWLINK, NEW, link(attrs), {LINKINFO, INFO_DATA})
    # the UDP port is big-endian on the wire (8472 = 0x2118)
    assert struct.pack("!H", port) in raw


def test_link_add_without_info_data():
    raw = compile_one(lambda b: b.link_add("dummy0", "dummy", mtu=1500, master=4, up=True))
    attrs = [("IFLA_IFNAME", "dummy0"), linkinfo("dummy"), ("IFLA_MTU", 1500), ("IFLA_MASTER", 4)]
    check(raw, RTM_NEWLINK, NEW, link(attrs, flags=IFF_UP, change=IFF_UP), {LINKINFO})


@pytest.mark.parametrize("kwargs, attrs", [
    ({}, []),
    ({"mtu": 1450}, [("IFLA_MTU", 1450)]),
    ({"address": "aa:bb:cc:dd:ee:ff"}, [("IFLA_ADDRESS", "aa:bb:cc:dd:ee:ff")]),
    ({"address": "0A:58:0A:F4:01:02"}, [("IFLA_ADDRESS", "0a:58:0a:f4:01:02")]),
    ({"master": 3}, [("IFLA_MASTER", 3)]),
    ({"mtu": 9000, "address": "02:00:00:00:00:01", "master": 12},
     [("IFLA_MTU", 9000), ("IFLA_ADDRESS", "02:00:00:00:00:01"), ("IFLA_MASTER", 12)]),
])
@pytest.mark.parametrize("up", [True, False])
def test_link_set(kwargs, attrs, up):
    raw = compile_one(lambda b: b.link_set(17, "eth0", up=up, **kwargs))
    # change always holds IFF_UP: up=False brings the device down
    check(raw, RTM_NEWLINK, 0, link(attrs, index=17, flags=IFF_UP if up else 0, change=IFF_UP), set())


@pytest.mark.parametrize("name", ["x", "veth0123456789a"])
def test_link_del(name):
    raw = compile_one(lambda b: b.link_del(name))
    check(raw, RTM_DELLINK, 0, link([("IFLA_IFNAME", name)]), set())


def test_hairpin():
    raw = compile_one(lambda b: b.hairpin(9, "veth1"))
    expected = link([("IFLA_PROTINFO", {"attrs": [("IFLA_BRPORT_MODE", 1)]})],
                    index=9, family=socket.AF_BRIDGE)
    # The kernel's br_setlink reads an IFLA_PROTINFO without NLA_F_NESTED as a u8 port
    # state, so the flag is what makes this a hairpin request: check() asserts it is set.
    check(raw, RTM_SETLINK, 0, expected, {(rtnl.IFLA_PROTINFO,)})


def test_lo_up_and_mark(monkeypatch):
    """netns._set_lo builds its RTM_SETLINK from rtnl's pieces and sends it with Batch."""
    kernel = FakeKernel()

    class Sock:                            # what netns opens: socket.socket(AF_NETLINK, ...)
        def __init__(self, *args):
            pass

        def send(self, data):
            return kernel.send(data)

        def recv(self, bufsize):
            return kernel.recv(bufsize)

        def bind(self, address):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(netns.socket, "socket", Sock)
    netns._set_lo("netlab:lab1")
    [raw] = split(kernel.sends[0])
    check(raw, RTM_SETLINK, 0, link([("IFLA_IFALIAS", "netlab:lab1")], index=1, flags=IFF_UP,
                                    change=IFF_UP), set())


# ---------------------------------------------------------------------------- addresses

@pytest.mark.parametrize("cidr, ip, prefixlen", [("10.244.1.1/24", "10.244.1.1", 24),
                                                 ("10.244.0.0/32", "10.244.0.0", 32),
                                                 ("192.168.56.10/24", "192.168.56.10", 24),
                                                 ("100.64.0.1/10", "100.64.0.1", 10)])
def test_addr_add(cidr, ip, prefixlen):
    raw = compile_one(lambda b: b.addr_add(5, cidr, "eth0"))
    expected = {"family": socket.AF_INET, "prefixlen": prefixlen, "flags": 0, "scope": 0, "index": 5,
                "attrs": [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]}
    check(raw, RTM_NEWADDR, NEW, expected, set())


# ---------------------------------------------------------------------------- routes

def route(dst_len: int, attrs, flags: int = 0) -> dict:
    return {"family": socket.AF_INET, "dst_len": dst_len, "src_len": 0, "tos": 0,
            "table": RT_TABLE_MAIN, "proto": rt_proto["static"], "scope": rt_scope["universe"],
            "type": rt_type["unicast"], "flags": flags, "attrs": list(attrs)}


@pytest.mark.parametrize("dst, kwargs, expected", [
    ("default", {"via": "192.168.56.1"}, route(0, [("RTA_GATEWAY", "192.168.56.1")])),
    ("0.0.0.0/0", {"via": "10.0.0.1", "oif": 2}, route(0, [("RTA_GATEWAY", "10.0.0.1"), ("RTA_OIF", 2)])),
    ("10.244.2.0/24", {"via": "192.168.56.12", "oif": 3},
     route(24, [("RTA_DST", "10.244.2.0"), ("RTA_GATEWAY", "192.168.56.12"), ("RTA_OIF", 3)])),
    ("10.244.2.0/24", {"via": "10.244.2.0", "oif": 5, "onlink": True},
     route(24, [("RTA_DST", "10.244.2.0"), ("RTA_GATEWAY", "10.244.2.0"), ("RTA_OIF", 5)],
           flags=RTNH_F_ONLINK)),
    ("10.0.0.7/32", {"oif": 4}, route(32, [("RTA_DST", "10.0.0.7"), ("RTA_OIF", 4)])),
])
def test_route_add(dst, kwargs, expected):
    raw = compile_one(lambda b: b.route_add(dst, **kwargs))
    check(raw, RTM_NEWROUTE, NEW, expected, set())


def test_route_add_scope_link():
    """Calico's per-pod route: `10.244.0.66 dev caliXXXX scope link`."""
    raw = compile_one(lambda b: b.route_add("10.244.0.66/32", oif=7, scope=rtnl.RT_SCOPE_LINK))
    expected = route(32, [("RTA_DST", "10.244.0.66"), ("RTA_OIF", 7)])
    expected["scope"] = rt_scope["link"]
    check(raw, RTM_NEWROUTE, NEW, expected, set())


@pytest.mark.parametrize("hops", [("192.168.56.11",), ("192.168.56.11", "192.168.56.12"),
                                  tuple(f"192.168.56.{10 + i}" for i in range(8))])
def test_route_add_multipath(hops):
    raw = compile_one(lambda b: b.route_add("198.51.100.0/24", multipath=hops))
    nexthops = [{"flags": 0, "hops": 0, "oif": 0, "attrs": [("RTA_GATEWAY", gw)]} for gw in hops]
    check(raw, RTM_NEWROUTE, NEW, route(24, [("RTA_DST", "198.51.100.0"), ("RTA_MULTIPATH", nexthops)]),
          set())


# ---------------------------------------------------------------------------- neighbours, FDB

@pytest.mark.parametrize("ip, mac", [("10.244.2.0", "0a:58:0a:f4:02:00"), ("192.0.2.1", "FF:FF:FF:FF:FF:FF")])
def test_neigh_add(ip, mac):
    raw = compile_one(lambda b: b.neigh_add(6, ip, mac))
    expected = {"family": socket.AF_INET, "ifindex": 6, "state": NUD_PERMANENT, "flags": 0,
                "ndm_type": 0, "attrs": [("NDA_DST", ip), ("NDA_LLADDR", mac.lower())]}
    check(raw, RTM_NEWNEIGH, NEW, expected, set())


def test_fdb_append():
    raw = compile_one(lambda b: b.fdb_append(6, "0a:58:0a:f4:02:00", "192.168.56.12"))
    expected = {"family": socket.AF_BRIDGE, "ifindex": 6, "state": NUD_PERMANENT, "flags": NTF_SELF,
                "ndm_type": 0, "attrs": [("NDA_LLADDR", "0a:58:0a:f4:02:00"), ("NDA_DST", "192.168.56.12")]}
    check(raw, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND, expected, set())


# ---------------------------------------------------------------------------- a node joins or leaves

def test_route_replace_and_delete():
    """The load balancer's ECMP route replaced when a node joins; a route to a node's subnet
    deleted by destination alone (table main, scope nowhere, any protocol: `ip route del`)."""
    raw = compile_one(lambda b: b.route_add("198.51.100.0/28", multipath=("192.168.56.11",), replace=True))
    nexthops = [{"flags": 0, "hops": 0, "oif": 0, "attrs": [("RTA_GATEWAY", "192.168.56.11")]}]
    check(raw, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
          route(28, [("RTA_DST", "198.51.100.0"), ("RTA_MULTIPATH", nexthops)]), set())
    raw = compile_one(lambda b: b.route_del("10.244.3.0/24"))
    check(raw, RTM_DELROUTE, 0, {"family": socket.AF_INET, "dst_len": 24, "src_len": 0, "tos": 0,
                                 "table": RT_TABLE_MAIN, "proto": 0, "scope": rt_scope["nowhere"],
                                 "type": 0, "flags": 0, "attrs": [("RTA_DST", "10.244.3.0")]}, set())


def test_neighbour_replace_and_delete_fdb_delete():
    raw = compile_one(lambda b: b.neigh_add(6, "10.244.3.0", "0a:58:0a:f4:03:00", replace=True))
    check(raw, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE,
          {"family": socket.AF_INET, "ifindex": 6, "state": NUD_PERMANENT, "flags": 0, "ndm_type": 0,
           "attrs": [("NDA_DST", "10.244.3.0"), ("NDA_LLADDR", "0a:58:0a:f4:03:00")]}, set())
    raw = compile_one(lambda b: b.neigh_del(6, "10.244.3.0"))
    check(raw, RTM_DELNEIGH, 0, {"family": socket.AF_INET, "ifindex": 6, "state": 0, "flags": 0,
                                 "ndm_type": 0, "attrs": [("NDA_DST", "10.244.3.0")]}, set())
    raw = compile_one(lambda b: b.fdb_del(6, "0a:58:0a:f4:03:00", "192.168.56.13"))
    check(raw, RTM_DELNEIGH, 0, {"family": socket.AF_BRIDGE, "ifindex": 6, "state": 0, "flags": NTF_SELF,
                                 "ndm_type": 0, "attrs": [("NDA_LLADDR", "0a:58:0a:f4:03:00"),
                                                          ("NDA_DST", "192.168.56.13")]}, set())


def test_errors_to_ignore_are_not_errors():
    """Deleting what is gone already (ESRCH, ENOENT) is fine when asked; another error is not."""
    batch = rtnl.Batch()
    batch.route_del("10.244.3.0/24")
    batch.neigh_del(6, "10.244.3.0")
    batch.commit(FakeKernel(errors={0: errno.ESRCH, 1: errno.ENOENT}), ignore=(errno.ESRCH, errno.ENOENT))
    batch.route_del("10.244.3.0/24")
    batch.neigh_del(6, "10.244.3.0")
    with pytest.raises(rtnl.NetlinkError) as info:
        batch.commit(FakeKernel(errors={0: errno.ESRCH, 1: errno.EPERM}), ignore=(errno.ESRCH,))
    assert (info.value.errno, info.value.what) == (errno.EPERM, "delete neighbour 10.244.3.0")


# ---------------------------------------------------------------------------- batching

def fill_mixed(batch: rtnl.Batch, n: int) -> list[int]:
    """n requests cycling through every kind; returns their message types."""
    kinds = []
    for i in range(n):
        step = i % 10
        if step == 0:
            batch.veth_add(f"veth{i}", "eth0", 7, mtu=1450, master=3, up=True)
        elif step == 1:
            batch.bridge_add(f"br{i}")
        elif step == 2:
            batch.vxlan_add(f"vx{i}", i, "192.168.56.11", 8472, 2)
        elif step == 3:
            batch.link_set(i, f"d{i}", mtu=1400, address="02:00:00:00:00:01", master=3)
        elif step == 4:
            batch.hairpin(i, f"d{i}")
        elif step == 5:
            batch.addr_add(i, f"10.{i // 256 % 256}.{i % 256}.1/24", f"d{i}")
        elif step == 6:
            batch.route_add(f"10.{i // 256 % 256}.{i % 256}.0/24", via="192.168.56.1", oif=2)
        elif step == 7:
            batch.neigh_add(i, "10.0.0.1", "02:00:00:00:00:02")
        elif step == 8:
            batch.fdb_append(i, "02:00:00:00:00:02", "192.168.56.12")
        else:
            batch.link_del(f"d{i}")
        kinds.append(batch.requests[-1][0])
    return kinds


@pytest.mark.parametrize("n", [1, 10, 600, 3000])
def test_batch_split_and_sequence(n):
    batch = rtnl.Batch()
    kinds = fill_mixed(batch, n)
    kernel = FakeKernel()
    batch.commit(kernel)
    messages = [m for chunk in kernel.sends for m in split(chunk)]
    assert [struct.unpack_from("=H", m, 4)[0] for m in messages] == kinds
    seqs = [struct.unpack_from("=I", m, 8)[0] for m in messages]
    assert all(b == a + 1 for a, b in zip(seqs, seqs[1:]))        # one by one, in order
    for raw in messages:                                          # each decodes on its own
        msg = decode(raw)
        assert msg["header"]["length"] == len(raw)
        assert msg["header"]["flags"] & (NLM_F_REQUEST | NLM_F_ACK) == NLM_F_REQUEST | NLM_F_ACK
    # no request is split across sends, and each send fits in the socket's send buffer
    assert all(len(chunk) < 65536 for chunk in kernel.sends)
    assert kernel.queue == [] and batch.requests == []


def test_batch_same_bytes_as_one_by_one():
    """Packing requests together changes nothing in them but the sequence number."""
    batch = rtnl.Batch()
    fill_mixed(batch, 40)
    requests = list(batch.requests)
    kernel = FakeKernel()
    batch.commit(kernel)
    together = [m for chunk in kernel.sends for m in split(chunk)]
    assert len(together) == len(requests)
    for raw, request in zip(together, requests):
        alone = compile_one(lambda b, request=request: b.requests.append(request))
        assert raw[:8] + raw[12:] == alone[:8] + alone[12:]


def test_batch_larger_than_the_receive_buffer():
    """The kernel answers a whole send before the writer reads: more requests in flight
    than acks fit in the receive buffer, and the acks beyond it are dropped (ENOBUFS)."""
    batch = rtnl.Batch()
    for i in range(1000):
        batch.link_set(1, "lo", mtu=65536)
    kernel = FakeKernel()
    batch.commit(kernel)
    assert kernel.seen == 1000 and kernel.queue == []


def test_sequence_numbers_wrap_around(monkeypatch):
    """The base sequence number is random: near 2**32, numbers must wrap, not overflow."""
    monkeypatch.setattr(rtnl.os, "urandom", lambda n: b"\xff" * n)
    batch = rtnl.Batch()
    fill_mixed(batch, 600)
    kernel = FakeKernel(errors={599: errno.EEXIST})
    with pytest.raises(rtnl.NetlinkError) as info:
        batch.commit(kernel)
    assert info.value.what == "delete d599"
    seqs = [struct.unpack_from("=I", m, 8)[0] for chunk in kernel.sends for m in split(chunk)]
    assert len(seqs) == 600 and len(set(seqs)) == 600
    assert all(b == (a + 1) % 2**32 for a, b in zip(seqs, seqs[1:]))


@pytest.mark.parametrize("acks_per_recv", [1, 7, 1000])
def test_first_error_names_its_request(acks_per_recv):
    batch = rtnl.Batch()
    batch.bridge_add("cni0")
    batch.addr_add(4, "10.244.1.1/24", "cni0")
    batch.route_add("10.244.2.0/24", via="192.168.56.12")
    batch.neigh_add(4, "10.0.0.1", "02:00:00:00:00:02")
    kernel = FakeKernel(errors={1: errno.EEXIST, 2: errno.ENETUNREACH}, acks_per_recv=acks_per_recv)
    with pytest.raises(rtnl.NetlinkError) as info:
        batch.commit(kernel)
    assert info.value.errno == errno.EEXIST
    assert info.value.what == "address 10.244.1.1/24 on cni0"
    assert kernel.seen == 4 and kernel.queue == []            # every request sent, every ack read
    assert batch.requests == []


def test_success_is_silent():
    kernel = FakeKernel(acks_per_recv=3)
    batch = rtnl.Batch()
    fill_mixed(batch, 20)
    batch.commit(kernel)
    assert kernel.seen == 20
