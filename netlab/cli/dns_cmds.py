"""netlab dns: a lookup from inside a pod, through the pod's own resolv.conf."""
from __future__ import annotations

from typing import Optional

import typer

from .common import LabOption, NamespaceOption, lab_name
from .main import app


def _resolv(text: str) -> tuple[list[str], list[str], int]:
    servers, search, ndots = [], [], 1
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] == "nameserver":
            servers.append(parts[1])
        elif parts[0] == "search":
            search = parts[1:]
        elif parts[0] == "options":
            for opt in parts[1:]:
                if opt.startswith("ndots:"):
                    ndots = int(opt.split(":")[1])
    return servers, search, ndots


def candidates(name: str, search: list[str], ndots: int) -> list[str]:
    """The names a glibc resolver tries, in order (search list first when dots < ndots)."""
    if name.endswith("."):
        return [name]
    expanded = [f"{name}.{domain}." for domain in search]
    return expanded + [name + "."] if name.count(".") < ndots else [name + "."] + expanded


@app.command()
def dns(query: str = typer.Argument(..., help="Name (or address, for PTR) to look up."),
        from_pod: Optional[str] = typer.Option(None, "--from", help="Pod to ask from (default: the first pod)."),
        qtype: str = typer.Option("A", "--type", "-t", help="A, SRV, PTR, TXT ..."),
        lab: Optional[str] = LabOption, namespace: str = NamespaceOption) -> None:
    """Resolve a name from inside a pod and show every try, the answer and who gave it."""
    import ipaddress
    from dnslib import QTYPE, RCODE, DNSRecord
    from .. import engine
    from ..kernel import netns
    from ..model.errors import LabError, StateError
    from ..model.services import endpoints_for
    name = lab_name(lab)
    cluster = engine.load(name)
    pod = cluster.pod(from_pod, namespace) if from_pod else next(
        (p for p in cluster.pods.values() if p.meta.namespace == namespace), None)
    if pod is None:
        raise LabError(f'no pod to ask from in namespace "{namespace}"; use --from')
    try:
        ipaddress.ip_address(query)
        query, qtype = ".".join(reversed(query.split("."))) + ".in-addr.arpa.", "PTR"
    except ValueError:
        pass
    from ..model.dns import pod_etc_files
    servers, search, ndots = _resolv(pod_etc_files(cluster, pod)["resolv.conf"].decode())
    if not servers:
        raise StateError(f"pod {pod.meta.name} has no nameserver (dnsPolicy {pod.spec.dns_policy})")
    server = servers[0]
    typer.echo(f"from pod {pod.meta.key} ({pod.pod_ip}), nameserver {server}, "
               f"search {' '.join(search) or '-'}, ndots {ndots}")
    for candidate in candidates(query, search, ndots):
        packet = DNSRecord.question(candidate, qtype)

        def ask():
            netns.enter(cluster.pod_netns(pod))
            return DNSRecord.parse(packet.send(server, 53, timeout=3))
        try:
            reply = netns.in_thread(ask)
        except OSError as exc:
            typer.echo(f"  {candidate:<50} no answer ({exc})")
            continue
        rcode = RCODE[reply.header.rcode]
        typer.echo(f"  {candidate:<50} {rcode}")
        if reply.header.rcode == RCODE.NOERROR and reply.rr:
            for rr in reply.rr:
                typer.echo(f"    {rr.rname} {rr.ttl} {QTYPE[rr.rtype]} {rr.rdata}")
            svc = next((s for s in cluster.services.values() if s.cluster_ip == server), None)
            if svc:
                backends = sorted({str(e.ip) for lst in endpoints_for(svc, cluster.pods.values()).values() for e in lst})
                typer.echo(f"answered by Service {svc.meta.key} ({server}), endpoints: {', '.join(backends) or 'none'}")
            else:
                typer.echo(f"answered by {server}")
            return
    raise typer.Exit(1)
