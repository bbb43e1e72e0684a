"""netlab.model.names and netlab.model.selectors: pure functions, no root."""
from __future__ import annotations

import pytest

from netlab.model import names
from netlab.model.errors import InvalidError
from netlab.model.selectors import Requirement, Selector, parse_selector, selector_from_api

from .model_helpers import check_error, raises_at

# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize("value", ["a", "web", "web-1", "0abc", "a" * 63])
def test_dns_label_accepts(value):
    assert names.check_dns_label(value) is None


@pytest.mark.parametrize("value,why", [
    ("", "must not be empty"),
    ("a" * 64, "no more than 63 characters"),
    ("Web", "lowercase RFC 1123 label"),
    ("-web", "start and end with an alphanumeric"),
    ("web-", "start and end with an alphanumeric"),
    ("we_b", "lowercase RFC 1123 label"),
    ("a.b", "lowercase RFC 1123 label"),
])
def test_dns_label_rejects(value, why):
    assert why in names.check_dns_label(value)


def test_dns_label_custom_limit():
    assert names.check_dns_label("a" * 15, 15) is None
    assert "no more than 15" in names.check_dns_label("a" * 16, 15)


@pytest.mark.parametrize("value", ["a", "a.b", "web-1.example", "a" * 253])
def test_dns_subdomain_accepts(value):
    assert names.check_dns_subdomain(value) is None


@pytest.mark.parametrize("value", ["", "a..b", ".a", "a.", "A.b", "a_b", "a" * 254, "a.-b"])
def test_dns_subdomain_rejects(value):
    assert names.check_dns_subdomain(value)


@pytest.mark.parametrize("value", ["http", "dns-tcp", "h2", "a" * 15, "8080-http"])
def test_port_name_accepts(value):
    assert names.check_port_name(value) is None


@pytest.mark.parametrize("value,why", [
    ("", "no more than 15"), ("a" * 16, "no more than 15"), ("HTTP", "alpha-numeric"),
    ("my_port", "alpha-numeric"), ("8080", "at least one letter"), ("a--b", "consecutive"),
    ("-http", "begin or end"), ("http-", "begin or end"),
])
def test_port_name_rejects(value, why):
    assert why in names.check_port_name(value)


def test_validate_lab_name():
    assert names.validate_lab_name("guestbook") == "guestbook"
    assert names.validate_lab_name("a" * names.LAB_NAME_MAX)
    raises_at(lambda: names.validate_lab_name("Bad_Name", file="--name"),
              "--name", "Lab", "metadata.name", "Invalid value: 'Bad_Name'", "RFC 1123")
    raises_at(lambda: names.validate_lab_name("a" * (names.LAB_NAME_MAX + 1), file="lab.yaml"),
              "lab.yaml", "Lab", "metadata.name", f"no more than {names.LAB_NAME_MAX}")


def test_namespace_names_carry_the_lab_and_map_back():
    made = [names.node_netns("gb", "node1"), names.underlay_netns("gb"), names.client_netns("gb"),
            names.internet_netns("gb"), names.pod_netns("gb", "default", "web.v1")]
    assert len(set(made)) == len(made)
    for ns in made:
        assert ns.startswith(names.PREFIX + "gb.")
        assert names.lab_of_netns(ns) == "gb"
    # Another lab's namespaces never collide with these, even when its name is a prefix.
    assert names.node_netns("gb2", "node1") not in made
    assert names.lab_of_netns(names.node_netns("gb2", "node1")) == "gb2"


@pytest.mark.parametrize("netns", ["default", "netlab-", "netlab-gb", "netlab-.node-x", "cni-1234"])
def test_lab_of_foreign_namespace_is_none(netns):
    assert names.lab_of_netns(netns) is None


def test_pod_netns_cannot_collide_across_namespaces():
    # Pod "b-c" in namespace "a" and pod "c" in namespace "a-b" are different pods.
    assert names.pod_netns("lab", "a", "b-c") != names.pod_netns("lab", "a-b", "c")


def test_long_pod_netns_is_hashed_not_truncated():
    long_a, long_b = "p" * 253, "p" * 252 + "q"
    a, b = names.pod_netns("lab", "default", long_a), names.pod_netns("lab", "default", long_b)
    assert len(a) <= names.NETNS_MAX and len(b) <= names.NETNS_MAX
    assert a != b
    assert a == names.pod_netns("lab", "default", long_a)            # stable
    assert names.lab_of_netns(a) == "lab"
    short = names.pod_netns("lab", "default", "web")
    assert "web" in short and len(short) < names.NETNS_MAX


def test_interface_names_fit_ifnamsiz_and_are_stable():
    veth = names.host_veth("default", "frontend-" + "x" * 200)
    assert veth.startswith("veth") and len(veth.encode()) <= names.IFNAMSIZ
    assert veth == names.host_veth("default", "frontend-" + "x" * 200)
    assert names.host_veth("default", "a") != names.host_veth("default", "b")
    assert names.host_veth("ns1", "a") != names.host_veth("ns2", "a")
    up = names.uplink("a-very-long-node-name-indeed")
    assert up.startswith("ul-") and len(up) <= names.IFNAMSIZ
    assert names.uplink("node1") != names.uplink("node2")


def test_check_ifname_counts_bytes():
    assert names.check_ifname("a" * 15) == "a" * 15
    with pytest.raises(InvalidError, match="longer than 15 bytes"):
        names.check_ifname("a" * 16)
    with pytest.raises(InvalidError):
        names.check_ifname("é" * 8)          # 8 characters, 16 bytes


def test_short_hash():
    assert names.short_hash("x") == names.short_hash("x")
    assert len(names.short_hash("x", 12)) == 12
    assert names.short_hash("x") != names.short_hash("y")


# ---------------------------------------------------------------------------- selectors

LABELS = {"name": "redis-slave", "env": "dev", "tier": "backend"}


@pytest.mark.parametrize("text,matches", [
    ("", True),
    ("name=redis-slave", True),
    ("name==redis-slave", True),
    ("name=redis-master", False),
    ("name!=redis-master", True),
    ("name!=redis-slave", False),
    ("missing!=x", True),                 # != matches objects without the key
    ("env", True),
    ("missing", False),
    ("!missing", True),
    ("!env", False),
    ("tier in (backend,frontend)", True),
    ("tier in (frontend)", False),
    ("missing in (a)", False),
    ("tier notin (frontend)", True),
    ("tier notin (frontend, backend)", False),
    ("missing notin (a)", True),          # notin matches objects without the key
    ("name=redis-slave,env=dev", True),
    ("name=redis-slave, env=prod", False),
    ("  name = redis-slave ,  tier in ( backend ) ", True),
    ("missing=", False),
    ("app.kubernetes.io/name!=x", True),
])
def test_selector_matching(text, matches):
    assert parse_selector(text).matches(LABELS) is matches


def test_empty_value_matches_empty_label():
    assert parse_selector("role=").matches({"role": ""})
    assert not parse_selector("role=").matches({"role": "x"})


def test_selector_text_round_trip():
    text = "name=redis-slave,env!=production,tier in (a,b),!canary,role,x notin (y)"
    sel = parse_selector(text)
    assert str(sel) == text
    assert parse_selector(str(sel)) == sel
    assert [r.op for r in sel.requirements] == ["=", "!=", "in", "!", "exists", "notin"]


def test_empty_selector_selects_everything():
    assert Selector().empty()
    assert Selector().matches(None)
    assert Selector().matches({"a": "b"})
    assert not parse_selector("a").empty()


def test_from_labels_is_sorted_equality():
    sel = Selector.from_labels({"b": "2", "a": 1})
    assert sel.requirements == (Requirement("a", "=", ("1",)), Requirement("b", "=", ("2",)))
    assert sel.matches({"a": "1", "b": "2", "c": "3"})
    assert not sel.matches({"a": "1"})
    assert str(sel) == "a=1,b=2"


@pytest.mark.parametrize("text,why", [
    ("a b", "unexpected 'b' after key 'a'"),
    ("a in b", "expected '('"),
    ("a in (b", "unexpected end"),
    ("a in ()", "needs at least one value"),
    ("a in (b c)", "expected: ',' or ')'"),
    ("a=b=c", "expected ','"),
    ("a=b,", "ends with ','"),
    ("a=b c", "expected ','"),
    ("-a=b", "invalid label key"),
    ("a/b/c=1", "invalid label key"),
    ("UPPER.example/x=1", "invalid label key"),
    ("a=-b", "invalid label value"),
    ("a=b_", "invalid label value"),
    ("!", "unexpected end"),
])
def test_bad_selector_is_one_line_error_naming_the_option(text, why):
    raises_at(lambda: parse_selector(text, field="--selector"), None, None, "--selector",
              "Invalid value: '", why)


def test_bad_selector_names_the_offending_token():
    assert "Invalid value: 'b_': invalid label value" in str(
        pytest.raises(InvalidError, parse_selector, "a=b_").value)
    assert "Invalid value: 'a/b/c': invalid label key" in str(
        pytest.raises(InvalidError, parse_selector, "a/b/c=1").value)


def test_api_selector_plain_map_and_label_selector():
    assert selector_from_api(None).empty()
    assert selector_from_api({}).empty()
    plain = selector_from_api({"app": "web", "tier": "fe"})
    assert plain == Selector.from_labels({"app": "web", "tier": "fe"})
    full = selector_from_api({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "track", "operator": "Exists"}]})
    assert full.matches({"app": "web", "tier": "be", "track": "x"})
    assert not full.matches({"app": "web", "tier": "be"})                       # no track
    assert not full.matches({"app": "web", "tier": "be", "track": "x", "canary": "1"})
    assert not full.matches({"app": "web", "tier": "be", "track": "x", "env": "prod"})
    assert not full.matches({"app": "db", "tier": "be", "track": "x"})


@pytest.mark.parametrize("spec,field,why", [
    ({"matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]},
     "spec.selector.matchExpressions[0].operator", "Invalid value: 'Like': operator must be In"),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]},
     "spec.selector.matchExpressions[0].values", "Required value"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "spec.selector.matchExpressions[0].values", "may not be specified"),
    ({"matchExpressions": [{"operator": "Exists"}]},
     "spec.selector.matchExpressions[0].key", "Required value"),
    ({"matchExpressions": ["a=b"]}, "spec.selector.matchExpressions[0]", "must be a mapping"),
    ({"matchLabels": ["a"]}, "spec.selector.matchLabels", "must be a mapping"),
])
def test_bad_api_selector(spec, field, why):
    with pytest.raises(InvalidError) as info:
        selector_from_api(spec, file="rc.yaml", obj="ReplicationController/web", field="spec.selector")
    check_error(info.value, "rc.yaml", "ReplicationController/web", field, why)
