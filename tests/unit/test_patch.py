"""The three PATCH formats: strategic merge patch against Kubernetes' own test cases
(tests/unit/data/strategicpatch_cases.yaml cites the upstream file), RFC 7386 and RFC 6902
against their RFCs' examples, and the patches kubectl sends for netlab's kinds."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netlab.model.patch import (SCHEMAS, Field, PatchError, Type, apply_patch, json_patch, merge_patch,
                                strategic_merge_patch)

CASES = yaml.safe_load((Path(__file__).parent / "data" / "strategicpatch_cases.yaml").read_text())["cases"]


def merge_item_schema() -> Type:
    """patch_test.go's MergeItem and RetainKeysMergeItem, as their struct tags say."""
    item, retain = Type(), Type()
    item.fields.update(
        mergingList=Field("merge", "name", item), mergingIntList=Field("merge"),
        mergeItemPtr=Field("merge", "name", item), replacingItem=Field("replace"),
        retainKeysMap=Field("retainKeys", "", retain),
        retainKeysMergingList=Field("merge,retainKeys", "name", item))
    retain.fields.update(mergingIntList=Field("merge"), mergingList=Field("merge", "name", item))
    return item


@pytest.mark.parametrize("case", CASES, ids=[c["description"] for c in CASES])
def test_upstream_strategic_merge_patch(case):
    if "error" in case:
        with pytest.raises(PatchError, match=case["error"]):
            strategic_merge_patch(case["original"], case["patch"], merge_item_schema())
        return
    assert strategic_merge_patch(case["original"], case["patch"], merge_item_schema()) == case["modified"]


def test_original_is_not_changed():
    original = {"mergingList": [{"name": 1}]}
    strategic_merge_patch(original, {"mergingList": [{"name": 1, "value": 2}]}, merge_item_schema())
    assert original == {"mergingList": [{"name": 1}]}


# RFC 7386 appendix A
@pytest.mark.parametrize("target,patch,result", [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_rfc7386(target, patch, result):
    assert merge_patch(target, patch) == result


# RFC 6902 appendix A (A.1-A.10, A.14, A.16) and its error cases (A.8, A.9, A.12)
def test_rfc6902_examples():
    assert json_patch({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}]) == {"foo": "bar", "baz": "qux"}
    assert json_patch({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}]) == \
        {"foo": ["bar", "qux", "baz"]}
    assert json_patch({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}]) == {"foo": "bar"}
    assert json_patch({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}]) == {"foo": ["bar", "baz"]}
    assert json_patch({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}]) == \
        {"baz": "boo", "foo": "bar"}
    assert json_patch({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
                      [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]) == \
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}
    assert json_patch({"foo": ["all", "grass", "cows", "eat"]},
                      [{"op": "move", "from": "/foo/1", "path": "/foo/3"}]) == {"foo": ["all", "cows", "eat", "grass"]}
    assert json_patch({"baz": "qux", "foo": ["a", 2, "c"]},
                      [{"op": "test", "path": "/baz", "value": "qux"},
                       {"op": "test", "path": "/foo/1", "value": 2}]) == {"baz": "qux", "foo": ["a", 2, "c"]}
    assert json_patch({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}]) == \
        {"foo": "bar", "child": {"grandchild": {}}}
    assert json_patch({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]) == \
        {"foo": ["bar", ["abc", "def"]]}
    assert json_patch({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}]) == {"/": 9, "~1": 10}
    with pytest.raises(PatchError):
        json_patch({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}])
    with pytest.raises(PatchError):
        json_patch({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}])
    with pytest.raises(PatchError):
        json_patch({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/3", "value": "x"}])


def test_a_failed_json_patch_changes_nothing():
    doc = {"a": 1}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/a"}, {"op": "remove", "path": "/nope"}])
    assert doc == {"a": 1}


def service():
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def test_kubectl_apply_patch_on_a_service():
    # What kubectl apply sends when a second port is added and a label changed.
    patch = {"metadata": {"labels": {"tier": "front"}},
             "spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}],
                      "ports": [{"port": 443, "targetPort": 8443}]}}
    out = apply_patch(service(), patch, "application/strategic-merge-patch+json", "Service")
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080, "protocol": "TCP"},
                                    {"port": 443, "targetPort": 8443}]
    # The same change as a merge patch replaces the list.
    out = apply_patch(service(), {"spec": {"ports": [{"port": 443}]}}, "application/merge-patch+json", "Service")
    assert out["spec"]["ports"] == [{"port": 443}]


def test_containers_merge_on_name_and_env_on_name():
    pod = {"kind": "Pod", "spec": {"containers": [
        {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}, {"name": "b", "image": "y"}]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}}
    out = strategic_merge_patch(pod, patch, SCHEMAS["Pod"])
    # Without $setElementOrder a new item goes before the server's (mergeSortedSlice: an item
    # only in the patch has no place in the live list to compare by).
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]
    assert [c["name"] for c in out["spec"]["containers"]] == ["a", "b"]
