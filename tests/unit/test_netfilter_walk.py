"""netfilter.walk over a service's random cascade: every endpoint a branch, however many."""
from netlab.probe import netfilter, rules
from netlab.plan.kubeproxy import probability


def cascade(endpoints: int) -> str:
    """iptables-save -c of a KUBE-SVC chain as kube-proxy writes it: 1/n, 1/(n-1), ..., 1."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":KUBE-SVC-X - [0:0]"]
    lines.append("[0:0] -A PREROUTING -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X")
    for i in range(endpoints):
        chain = f"KUBE-SEP-{i}"
        lines.insert(2, f":{chain} - [0:0]")
        chance = f" -m statistic --mode random --probability {probability(endpoints - i)}" if i < endpoints - 1 else ""
        lines.append(f"[0:0] -A KUBE-SVC-X{chance} -j {chain}")
        lines.append(f"[0:0] -A {chain} -p tcp -m tcp -j DNAT --to-destination 10.244.{i // 250}.{i % 250 + 2}:8080")
    return "\n".join(lines + ["COMMIT"]) + "\n"


def walk(endpoints: int):
    nat = rules.parse(cascade(endpoints))["nat"]
    pkt = netfilter.Packet("10.244.9.9", "10.96.0.10", dport=80)
    return netfilter.walk(nat, "PREROUTING", pkt, netfilter.Where(frozenset()))


def test_three_endpoints_each_a_third():
    outcomes = walk(3)
    assert [o.verdict for o in outcomes] == ["DNAT"] * 3
    assert {o.packet.dst for o in outcomes} == {"10.244.0.2", "10.244.0.3", "10.244.0.4"}
    assert all(abs(o.chance - 1 / 3) < 1e-3 for o in outcomes)


def test_a_thousand_endpoints_do_not_exhaust_the_stack():
    # A service over 1,000 pods: the walk used to recurse once per endpoint (RecursionError).
    outcomes = walk(1500)
    assert len(outcomes) == 1500
    assert len({o.packet.dst for o in outcomes}) == 1500
    assert abs(sum(o.chance for o in outcomes) - 1) < 1e-6
