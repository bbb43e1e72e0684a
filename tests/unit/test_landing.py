"""Where a connection landed: the kubelet's own probes of a pod are not taken for it."""
from netlab.probe import conntable
from netlab.probe.landing import _await_new

# /proc/net/tcp as a node's namespace shows it: the kubelet's probe of 10.244.1.5:8080 from
# cni0's 10.244.1.1:40000 (TIME_WAIT), and an unrelated listener.
NODE_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0101F40A:9C40 0501F40A:1F90 06 00000000:00000000 03:00000ed4 00000000     0        0 0 3
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1
"""


def test_own_connections_reads_every_socket_of_the_namespace(tmp_path):
    path = tmp_path / "tcp"
    path.write_text(NODE_TCP)
    assert conntable.own_connections(str(path)) == {("10.244.1.1:40000", "10.244.1.5:8080"),
                                                     ("0.0.0.0:22", "0.0.0.0:0")}
    assert conntable.own_connections(str(tmp_path / "missing")) == set()


def test_a_kubelet_probe_arriving_first_is_passed_over():
    # The pod's table gains the kubelet's probe and the probe's masqueraded connection at
    # once; both come from the node's cni0 address.
    table = {"default/web-1": {"10.244.1.1:40000": True, "10.244.1.1:51234": True}}
    probe = ("default/web-1", "10.244.1.1:40000")
    known = {"default/web-1": set()}
    found = _await_new(lambda: table, known, lambda key, peer: (key, peer) == probe)
    assert found == ("default/web-1", "10.244.1.1:51234")
    assert "10.244.1.1:40000" in known["default/web-1"]


def test_without_the_filter_the_probe_would_be_taken():
    table = {"default/web-1": {"10.244.1.1:40000": True}}
    found = _await_new(lambda: table, {"default/web-1": set()}, lambda key, peer: False)
    assert found == ("default/web-1", "10.244.1.1:40000")


def test_the_clients_own_address_wins_over_a_stray_arrival():
    # No translation on the way: the server sees the client's own address; a late
    # connection of an earlier probe, accepted first, must not be taken for it.
    table = {"default/web-1": {"10.244.1.2:58959": True, "10.244.1.2:36674": False}}
    known = {"default/web-1": set()}
    calls = []

    def tables():
        calls.append(1)
        if len(calls) > 2:
            table["default/web-1"]["10.244.1.2:36674"] = True     # accepted now
        return table
    found = _await_new(tables, known, lambda key, peer: False, "10.244.1.2:36674")
    assert found == ("default/web-1", "10.244.1.2:36674")
