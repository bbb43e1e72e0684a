"""netlab.model.ipam: node subnets, host numbers and address pools."""
from __future__ import annotations

import ipaddress

import pytest

from netlab.model.errors import LabError
from netlab.model.ipam import Exhausted, Pool, node_subnet, nth_host


def test_node_subnet_index_is_the_third_octet():
    assert str(node_subnet("10.244.0.0/16", 24, 1)) == "10.244.1.0/24"
    assert str(node_subnet("10.244.0.0/16", 24, 255)) == "10.244.255.0/24"
    assert str(node_subnet("10.244.0.0/22", 24, 3)) == "10.244.3.0/24"
    assert str(node_subnet("10.0.0.0/8", 26, 5)) == "10.0.1.64/26"


@pytest.mark.parametrize("cidr,prefix,index", [("10.244.0.0/16", 24, 256), ("10.244.0.0/22", 24, 4),
                                               ("10.244.0.0/16", 24, -1)])
def test_node_subnet_out_of_range(cidr, prefix, index):
    with pytest.raises(Exhausted, match=f"no node subnet {index}"):
        node_subnet(cidr, prefix, index)


def test_nth_host():
    assert str(nth_host("10.244.1.0/24", 1)) == "10.244.1.1"
    assert str(nth_host("10.244.1.0/24", 254)) == "10.244.1.254"
    assert str(nth_host(ipaddress.ip_network("192.168.56.0/24"), 11)) == "192.168.56.11"
    for n in (255, 256, -1):
        with pytest.raises(Exhausted):
            nth_host("10.244.1.0/24", n)


def test_pool_hands_out_in_order_skipping_reserved():
    pool = Pool("10.244.1.0/24", reserved=["10.244.1.0", "10.244.1.1"], first=2)
    assert [pool.allocate() for _ in range(3)] == ["10.244.1.2", "10.244.1.3", "10.244.1.4"]
    pool = Pool("10.96.0.0/12", reserved=["10.96.0.1", "10.96.0.3"], first=1)
    assert [pool.allocate() for _ in range(3)] == ["10.96.0.2", "10.96.0.4", "10.96.0.5"]


def test_pool_take_and_free():
    pool = Pool("10.96.0.0/24", first=1)
    assert pool.is_free("10.96.0.7")
    assert pool.take("10.96.0.7") == "10.96.0.7"
    assert not pool.is_free("10.96.0.7")
    with pytest.raises(LabError, match="10.96.0.7 is already allocated"):
        pool.take("10.96.0.7")
    with pytest.raises(LabError, match="not in"):
        pool.take("10.97.0.7")
    # Allocation never hands out what was taken explicitly.
    assert "10.96.0.7" not in [pool.allocate() for _ in range(10)]


@pytest.mark.parametrize("address,inside", [
    ("10.96.0.0", False),          # network address
    ("10.96.0.1", True),
    ("10.96.0.254", True),
    ("10.96.0.255", False),        # broadcast address
    ("10.96.1.1", False),
])
def test_pool_contains_only_what_it_could_hand_out(address, inside):
    pool = Pool("10.96.0.0/24", first=1)
    assert pool.contains(address) is inside
    if not inside:
        with pytest.raises(LabError, match="not in"):
            pool.take(address)


def test_pool_first_offset_is_outside_the_range():
    pool = Pool("10.244.1.0/24", first=2)
    assert not pool.contains("10.244.1.1")
    assert pool.contains("10.244.1.2")


def test_pool_exhaustion_and_no_duplicates():
    pool = Pool("198.51.100.0/28", first=1)
    got = [pool.allocate() for _ in range(14)]
    assert len(set(got)) == 14
    assert got[0] == "198.51.100.1" and got[-1] == "198.51.100.14"
    with pytest.raises(Exhausted, match="no free address left in 198.51.100.0/28"):
        pool.allocate()


def test_pool_release_is_reused_only_after_wrapping():
    pool = Pool("198.51.100.0/29", first=1)           # .1 - .6
    _, b, _ = pool.allocate(), pool.allocate(), pool.allocate()
    pool.release(b)
    assert pool.is_free(b)
    # Like the API server, the next allocation moves on instead of reusing at once ...
    assert [pool.allocate() for _ in range(3)] == ["198.51.100.4", "198.51.100.5", "198.51.100.6"]
    # ... and comes back to the freed address when the end of the range is reached.
    assert pool.allocate() == b
    with pytest.raises(Exhausted):
        pool.allocate()
    pool.release("198.51.100.5")
    pool.release("198.51.100.5")                          # releasing twice is harmless
    assert pool.allocate() == "198.51.100.5"


def test_tiny_pools():
    assert Pool("10.0.0.0/31", first=1).allocate() == "10.0.0.1"
    with pytest.raises(Exhausted):
        Pool("10.0.0.0/32", first=1).allocate()
