"""Where a connection landed: another connection arriving meanwhile is not taken for the probe's."""
from netlab.probe.landing import _await_new


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
    found = _await_new(tables, known, "10.244.1.2:36674")
    assert found == ("default/web-1", "10.244.1.2:36674")
