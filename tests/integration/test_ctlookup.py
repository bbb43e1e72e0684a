"""verify finds where a service connection landed from the translating node's conntrack."""
from __future__ import annotations

import pytest

from netlab.probe import sockets
from netlab.probe.ctlookup import Conntrack
from netlab.probe.landing import land
from netlab.probe.lab import load_settled

from .netutil import web_lab_text

pytestmark = pytest.mark.root

LAB = web_lab_text(3, """
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: c, image: example/web}]
""")


def test_conntrack_names_the_endpoint_and_the_peer_it_sees(make_lab):
    cluster = make_lab(manifests=LAB)
    view, settled = load_settled(cluster.name)
    assert settled
    svc = next(s for s in view.services if s.meta.name == "web")
    client = next(p for p in view.pods if p.meta.name == "client")
    endpoints = {(p.pod_ip, 8080) for p in view.pods if p.meta.labels.get("app") == "web"}
    conntrack = Conntrack([n.netns for n in view.cluster.nodes])
    held = []
    try:
        for _ in range(5):
            sock = sockets.in_netns(view.netns(client), sockets.open_connection, svc.cluster_ip, 80)
            held.append(sock)
            local_ip, local_port = sock.getsockname()
            reply = conntrack.endpoint(local_ip, local_port, svc.cluster_ip, 80)
            assert reply is not None, "no translating node knows the connection"
            assert (reply[0], reply[1]) in endpoints
            assert (reply[2], reply[3]) == (local_ip, local_port)     # DNAT only: the pod sees its client
        # A connection nobody made is in no conntrack table.
        assert conntrack.endpoint(client.pod_ip, 1, svc.cluster_ip, 80) is None
    finally:
        sockets.close_all(held)
        conntrack.close()
    # And land() uses it: every connection found on one of the three endpoints.
    eps = view.endpoints(svc, svc.ports[0])
    landing = land(view, view.netns(client), svc.cluster_ip, 80, eps, 20)
    assert landing.landed == landing.opened == 20 and landing.error is None
