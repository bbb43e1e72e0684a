"""NetworkPolicy compiled into iptables rules and ipsets the way Calico's Felix lays them out.

Pure: from the cluster to, for one node, the ipsets it needs and one iptables-restore input
for the filter table. The layout (Felix's, names and marks included):

    FORWARD -> cali-FORWARD (first)
        -i cali+ -> cali-from-wl-dispatch -> (by interface) cali-fw-caliXXXX  (the pod's egress)
        -o cali+ -> cali-to-wl-dispatch   -> (by interface) cali-tw-caliXXXX  (the pod's ingress)
    ... kube-proxy's FORWARD rules ...
    FORWARD (last): accept mark 0x10000 set -> ACCEPT ("Policy explicitly accepted packet.")
    INPUT -> cali-INPUT -> -i cali+ -> cali-wl-to-host -> cali-from-wl-dispatch, then ACCEPT
             (DefaultEndpointToHostAction: what a pod sends its own node passes its egress
             policy, then is accepted)

An endpoint chain accepts established flows, drops invalid ones, clears the accept mark,
then jumps to the chain of each policy that isolates the pod in that direction
(cali-pi-<policy> for ingress, cali-po-<policy> for egress, by name); a policy chain sets
the accept mark on the first rule that matches and returns. If no policy set it, the
endpoint chain drops the packet ("Drop if no policies passed packet"): a denied connection
gets no answer at all, its SYN just vanishes. A pod no policy isolates gets its namespace
profile's rule instead, which accepts everything.

Selectors become ipsets (hash:ip of the pods a peer stands for), named ports hash:ip,port
sets of (pod, protocol:port), ipBlock excepts hash:net sets; Felix's names: cali40s: +
a hash of what the set stands for. Traffic the node itself sends to its pods is not policed
(OUTPUT has nothing of this), as Kubernetes requires.
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Optional

from ..model import names
from ..model.cluster import Cluster, Node
from ..model.netpol import NetworkPolicy, Peer, PolicyPort, named_port, peer_pods, policies_for, selects
from ..model.objects import Pod
from .kubeproxy import Jump

ACCEPT_MARK = "0x10000/0x10000"
CLEAR_ACCEPT = "0x0/0x10000"
SET_PREFIX = "cali40"                 # Felix's IPv4 set prefix ("cali40s:...", "cali40n:...")
TMP_PREFIX = "cali4t"                 # a set being filled, swapped in when complete
TOP_CHAINS = ("cali-FORWARD", "cali-INPUT", "cali-wl-to-host", "cali-from-wl-dispatch",
              "cali-to-wl-dispatch")


def _hash(text: str, length: int) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")[:length]


def policy_chain(policy: NetworkPolicy, direction: str) -> str:
    """cali-pi-_<hash> (ingress) / cali-po-_<hash> (egress): Felix's hashed form of the
    policy's name <ns>/knp.default.<name>, which is too long for a chain (28 characters)."""
    return f"cali-p{'i' if direction == 'Ingress' else 'o'}-_{_hash(policy.felix_name, 19)}"


def endpoint_chains(iface: str) -> tuple[str, str]:
    """(cali-tw-<iface>, cali-fw-<iface>): to the workload (its ingress), from it (its egress)."""
    return f"cali-tw-{iface}", f"cali-fw-{iface}"


@dataclass
class IpSet:
    name: str
    kind: str                          # hash:ip | hash:ip,port | hash:net
    members: list[str]
    about: str                         # what it stands for, for people reading `ipset list`


@dataclass
class NodePolicy:
    ipsets: dict[str, IpSet] = field(default_factory=dict)
    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    # Where each drop or policy verdict comes from, for trace: chain -> (pod key, direction, policies)
    endpoints: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)

    def text(self, existing: list[str] = ()) -> str:
        """iptables-restore input (filter table) for --noflush: declaring a chain flushes it;
        the cali- chains of `existing` no longer wanted are deleted in the same commit, once
        nothing jumps to them any more."""
        stale = sorted(c for c in existing if is_calico_chain(c) and c not in self.chains)
        return ("*filter\n" + "".join(f":{c} - [0:0]\n" for c in self.chains + stale)
                + "".join(r + "\n" for r in self.rules) + "".join(f"-X {c}\n" for c in stale) + "COMMIT\n")

    def ipset_text(self) -> str:
        """ipset restore input: each set filled under a temporary name, then swapped in whole."""
        out = []
        for s in self.ipsets.values():
            tmp = TMP_PREFIX + s.name[len(SET_PREFIX):]
            out.append(f"create {s.name} {s.kind} family inet -exist")
            out.append(f"create {tmp} {s.kind} family inet -exist")
            out.append(f"flush {tmp}")
            out += [f"add {tmp} {m} -exist" for m in s.members]
            out.append(f"swap {tmp} {s.name}")
            out.append(f"destroy {tmp}")
        return "\n".join(out) + ("\n" if out else "")


def jumps() -> list[Jump]:
    """cali-FORWARD and cali-INPUT first in their built-in chains."""
    return [Jump("filter", "FORWARD", "cali-FORWARD", ("-m", "comment", "--comment", '"cali:wUHhoiAYhphO9Mso"')),
            Jump("filter", "INPUT", "cali-INPUT", ("-m", "comment", "--comment", '"cali:Cz_u1IQiXIMmKD4c"'))]


# The accept of what policy allowed goes last in FORWARD, as Felix appends it, so kube-proxy's
# FORWARD rules (the REJECT of a service without endpoints) still see allowed packets.
ACCEPT_RULE = (f'-A FORWARD -m comment --comment "Policy explicitly accepted packet." -m mark --mark {ACCEPT_MARK} '
               "-j ACCEPT")


def missing_accept_text(saved_filter: str) -> str:
    """Restore input appending ACCEPT_RULE to FORWARD unless iptables-save shows it already."""
    return "" if f"\n{ACCEPT_RULE}\n" in saved_filter else f"*filter\n{ACCEPT_RULE}\nCOMMIT\n"


def is_calico_chain(name: str) -> bool:
    return name.startswith("cali-")


class _Compiler:
    def __init__(self, cluster: Cluster, out: NodePolicy):
        self.cluster, self.out = cluster, out

    def _set(self, kind: str, tag: str, about: str, members: list[str]) -> str:
        name = f"{SET_PREFIX}{tag}:{_hash(kind + '|' + about, 22)}"
        self.out.ipsets[name] = IpSet(name, kind, sorted(set(members)), about)
        return name

    def pods_set(self, policy: NetworkPolicy, peer: Peer) -> str:
        scope = (f"namespaces {{{peer.namespace_selector}}}" if peer.namespace_selector is not None
                 else f"namespace {policy.meta.namespace}")
        about = f"{scope} pods {{{peer.pod_selector if peer.pod_selector is not None else ''}}}"
        return self._set("hash:ip", "s", about, [p.pod_ip for p in peer_pods(self.cluster, policy, peer)])

    def except_set(self, excepts: tuple[str, ...]) -> str:
        return self._set("hash:net", "s", "except " + ",".join(excepts), list(excepts))

    def named_set(self, port: PolicyPort, pods: list[Pod], about: str) -> str:
        members = []
        for pod in pods:
            number = named_port(pod, port.name, port.protocol)
            if number:
                members.append(f"{pod.pod_ip},{port.protocol.lower()}:{number}")
        return self._set("hash:ip,port", "n", f"named port {port.name}/{port.protocol} of {about}", members)

    def policy(self, policy: NetworkPolicy, direction: str) -> str:
        chain = policy_chain(policy, direction)
        if chain in self.out.chains:
            return chain
        self.out.chains.append(chain)
        rules = policy.ingress if direction == "Ingress" else policy.egress
        peer_dir = "src" if direction == "Ingress" else "dst"
        addr_flag = "-s" if direction == "Ingress" else "-d"
        selected = [p for p in self.cluster.pods.values() if selects(policy, p)]
        for i, rule in enumerate(rules):
            comment = f'-m comment --comment "Policy {policy.felix_name} {direction.lower()} rule {i + 1}"'
            peers: list[Optional[Peer]] = list(rule.peers) or [None]
            ports: list[Optional[PolicyPort]] = list(rule.ports) or [None]
            for peer in peers:
                peer_match = ""
                if peer is not None and peer.ip_block is not None:
                    peer_match = f"{addr_flag} {peer.ip_block.cidr}"
                    if peer.ip_block.excepts:
                        peer_match += f" -m set ! --match-set {self.except_set(peer.ip_block.excepts)} {peer_dir}"
                elif peer is not None:
                    peer_match = f"-m set --match-set {self.pods_set(policy, peer)} {peer_dir}"
                for port in ports:
                    port_match = ""
                    if port is not None:
                        proto = port.protocol.lower()
                        port_match = f"-p {proto}"
                        if port.name:
                            if direction == "Ingress":
                                owners, about = selected, f"pods selected by {policy.felix_name}"
                            elif peer is not None and peer.ip_block is None:
                                owners, about = peer_pods(self.cluster, policy, peer), str(peer)
                            else:
                                owners, about = list(self.cluster.pods.values()), "every pod"
                            port_match += f" -m set --match-set {self.named_set(port, owners, about)} dst,dst"
                        elif port.port:
                            rng = f"{port.port}:{port.end_port}" if port.end_port else str(port.port)
                            port_match += f" -m {proto} --dport {rng}"
                    match = " ".join(x for x in (port_match, peer_match) if x)
                    self.out.rules.append(f"-A {chain} {match + ' ' if match else ''}{comment} "
                                          f"-j MARK --set-xmark {ACCEPT_MARK}")
                    self.out.rules.append(f"-A {chain} -m mark --mark {ACCEPT_MARK} -j RETURN")
        return chain

    def endpoint(self, pod: Pod, iface: str, direction: str) -> str:
        tw, fw = endpoint_chains(iface)
        chain = tw if direction == "Ingress" else fw
        self.out.chains.append(chain)
        policies = policies_for(self.cluster, pod, direction)
        self.out.endpoints[chain] = (pod.meta.key, direction, [p.meta.name for p in policies])
        r = self.out.rules
        r.append(f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        r.append(f"-A {chain} -m conntrack --ctstate INVALID -j DROP")
        r.append(f"-A {chain} -j MARK --set-xmark {CLEAR_ACCEPT}")
        if not policies:
            r.append(f'-A {chain} -m comment --comment "Profile kns.{pod.meta.namespace}: no policy isolates '
                     f'{pod.meta.name} for {direction.lower()}" -j MARK --set-xmark {ACCEPT_MARK}')
            r.append(f"-A {chain} -j RETURN")
            return chain
        for policy in policies:
            target = self.policy(policy, direction)
            r.append(f"-A {chain} -m mark --mark {CLEAR_ACCEPT} -j {target}")
            r.append(f'-A {chain} -m mark --mark {ACCEPT_MARK} -m comment --comment "Return if policy accepted" -j RETURN')
        listed = ", ".join(p.meta.name for p in policies)
        r.append(f'-A {chain} -m comment --comment "Drop if no policies passed packet ({direction.lower()} '
                 f'policies of {pod.meta.key}: {listed})" -j DROP')
        return chain


def render_node(cluster: Cluster, node: Node) -> NodePolicy:
    """Felix's filter rules and ipsets for one node (the pods it hosts)."""
    out = NodePolicy(chains=list(TOP_CHAINS))
    comp = _Compiler(cluster, out)
    local = sorted(cluster.pods_on(node.name), key=lambda p: p.meta.key)
    dispatch_to, dispatch_from = [], []
    for pod in local:
        iface = names.host_veth(pod.meta.namespace, pod.meta.name, calico=cluster.config.calico_pods)
        tw = comp.endpoint(pod, iface, "Ingress")
        fw = comp.endpoint(pod, iface, "Egress")
        dispatch_to.append(f"-A cali-to-wl-dispatch -o {iface} -g {tw}")
        dispatch_from.append(f"-A cali-from-wl-dispatch -i {iface} -g {fw}")
    out.rules += dispatch_from + ['-A cali-from-wl-dispatch -m comment --comment "Unknown interface" -j DROP']
    out.rules += dispatch_to + ['-A cali-to-wl-dispatch -m comment --comment "Unknown interface" -j DROP']
    out.rules += [
        "-A cali-FORWARD -i cali+ -j cali-from-wl-dispatch",
        "-A cali-FORWARD -o cali+ -j cali-to-wl-dispatch",
        "-A cali-INPUT -i cali+ -g cali-wl-to-host",
        "-A cali-wl-to-host -j cali-from-wl-dispatch",
        '-A cali-wl-to-host -m comment --comment "Configured DefaultEndpointToHostAction" -j ACCEPT',
    ]
    return out

