"""The three patch formats the Kubernetes API server accepts on PATCH, applied to plain JSON
documents (pure; the agent applies them to the object it serves, then replaces it):

- application/json-patch+json: RFC 6902 (add, remove, replace, move, copy, test);
- application/merge-patch+json: RFC 7386 (maps merge, null deletes, lists are replaced);
- application/strategic-merge-patch+json: Kubernetes' strategic merge patch, what
  `kubectl apply`, `label`, `annotate` and `scale` send. Lists with a patch strategy "merge"
  merge item by item on their merge key (containers by name, service ports by port, ...),
  and the directives $patch (replace, delete, merge), $setElementOrder/<list>,
  $deleteFromPrimitiveList/<list> and $retainKeys work as in
  k8s.io/apimachinery/pkg/util/strategicpatch (patch.go: mergeMap, mergeSlice,
  normalizeElementOrder, mergeSortedSlice). Where a field has no strategy (it is not in the
  schema), maps merge and lists are replaced, as upstream does for unknown fields.

The schema is a small table of the patch metadata of the kinds netlab serves (the Go
struct tags patchStrategy/patchMergeKey of core/v1), see SCHEMAS.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import InvalidError

DIRECTIVE = "$patch"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
RETAIN_KEYS = "$retainKeys"


class PatchError(InvalidError):
    """A patch that cannot be applied (the API server answers 422, or 400 if malformed)."""


# ---------------------------------------------------------------------- schema


@dataclass
class Field:
    strategy: str = ""            # "" | "merge" | "replace" | "retainKeys" | "merge,retainKeys"
    key: str = ""                 # patchMergeKey of a merging list of maps
    type: Optional["Type"] = None  # the type of the value (or of a list's items)


@dataclass
class Type:
    fields: dict[str, Field] = field(default_factory=dict)

    def get(self, name: str) -> Field:
        return self.fields.get(name) or Field()


def _t(**fields: Field) -> Type:
    return Type(dict(fields))


OWNER_REFS = Field("merge", "uid")
OBJECT_META = _t(finalizers=Field("merge"), ownerReferences=OWNER_REFS)
CONTAINER = _t(ports=Field("merge", "containerPort"), env=Field("merge", "name"),
               volumeMounts=Field("merge", "mountPath"), volumeDevices=Field("merge", "devicePath"))
POD_SPEC = _t(containers=Field("merge", "name", CONTAINER), initContainers=Field("merge", "name", CONTAINER),
              ephemeralContainers=Field("merge", "name", CONTAINER),
              volumes=Field("merge,retainKeys", "name"), imagePullSecrets=Field("merge", "name"),
              hostAliases=Field("merge", "ip"))
POD_STATUS = _t(conditions=Field("merge", "type"), podIPs=Field("merge", "ip"),
                hostIPs=Field("merge", "ip"))
POD_TEMPLATE = _t(metadata=Field(type=OBJECT_META), spec=Field(type=POD_SPEC))
SERVICE_SPEC = _t(ports=Field("merge", "port"))
NODE_STATUS = _t(conditions=Field("merge", "type"), addresses=Field("merge", "type"))

SCHEMAS: dict[str, Type] = {
    "Pod": _t(metadata=Field(type=OBJECT_META), spec=Field(type=POD_SPEC), status=Field(type=POD_STATUS)),
    "ReplicationController": _t(metadata=Field(type=OBJECT_META),
                                spec=Field(type=_t(template=Field(type=POD_TEMPLATE)))),
    "Service": _t(metadata=Field(type=OBJECT_META), spec=Field(type=SERVICE_SPEC)),
    "Namespace": _t(metadata=Field(type=OBJECT_META)),
    "Endpoints": _t(metadata=Field(type=OBJECT_META)),     # subsets: atomic (no strategy)
    "Node": _t(metadata=Field(type=OBJECT_META), status=Field(type=NODE_STATUS)),
    "Scale": _t(metadata=Field(type=OBJECT_META)),
}
EMPTY = Type()


# ---------------------------------------------------------------------- JSON merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(Target, Patch)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------- JSON patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"the path {path!r} does not exist")
    return doc


def _index(container: list, part: str, path: str, adding: bool) -> int:
    if adding and part == "-":
        return len(container)
    if not part.isdigit() or (part != "0" and part.startswith("0")):
        raise PatchError(f"invalid array index {part!r} in {path!r}")
    i = int(part)
    if i > len(container) or (not adding and i == len(container)):
        raise PatchError(f"array index {i} out of bounds in {path!r}")
    return i


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, True), value)
    else:
        raise PatchError(f"the path {path!r} does not exist")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"the path {path!r} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path, False))
    raise PatchError(f"the path {path!r} does not exist")


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902: apply the operations in order, all or nothing."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str) or not isinstance(op.get("path"), str):
            raise PatchError(f"operation {i} needs \"op\" and \"path\"")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {i} ({kind}) needs a \"value\"")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise PatchError(f"operation {i} ({kind}) needs \"from\"")
            if kind == "move":
                if path.startswith(source + "/"):
                    raise PatchError(f"cannot move {source!r} into its own child {path!r}")
                doc, value = _remove(doc, source)
            else:
                value = copy.deepcopy(_walk(doc, _pointer(source), source))
            doc = _add(doc, path, value)
        elif kind == "test":
            if _walk(doc, _pointer(path), path) != op["value"]:
                raise PatchError(f"test failed: {path!r} is not {op['value']!r}")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc


# ---------------------------------------------------------------------- strategic merge patch


def strategic_merge_patch(original: Any, patch: Any, schema: Type = EMPTY) -> Any:
    """StrategicMergePatch(original, patch): the patched copy of original."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {},
                      copy.deepcopy(patch), schema)


def _merge_map(original: dict, patch: dict, schema: Type) -> dict:
    if DIRECTIVE in patch:
        directive = patch.pop(DIRECTIVE)
        if directive == "replace":
            return patch
        if directive == "delete":
            return {}
        if directive != "merge":
            raise PatchError(f"unknown patch type: {directive} in map")
    if RETAIN_KEYS in patch:
        keep = patch.pop(RETAIN_KEYS)
        if not isinstance(keep, list):
            raise PatchError("$retainKeys must be a list")
        for key in [k for k in original if k not in keep]:
            del original[key]
    # $setElementOrder lists first: their list is merged and ordered together with them.
    for key in [k for k in patch if k.startswith(SET_ORDER)]:
        order = patch.pop(key)
        name = key[len(SET_ORDER):]
        f = schema.get(name)
        deletions = patch.pop(DELETE_PRIMITIVE + name, None)
        current = original.get(name)
        items = patch.pop(name, [])
        if not isinstance(order, list) or not isinstance(items, list):
            raise PatchError(f"{key} and {name} must be lists")
        current = list(current) if isinstance(current, list) else []
        if deletions:
            current = [v for v in current if v not in deletions]
        merged = _merge_list(current, items, f, order=order)
        original[name] = merged
    for key, value in patch.items():
        if key.startswith(DELETE_PRIMITIVE):
            name = key[len(DELETE_PRIMITIVE):]
            if isinstance(original.get(name), list) and isinstance(value, list):
                original[name] = [v for v in original[name] if v not in value]
            continue
        if value is None:
            original.pop(key, None)
            continue
        if key not in original or type(original[key]) is not type(value):
            original[key] = _strip_directives(value)
            continue
        f = schema.get(key)
        if isinstance(value, dict):
            if "replace" in f.strategy.split(","):
                original[key] = _strip_directives(value)
            else:
                original[key] = _merge_map(original[key], value, f.type or EMPTY)
        elif isinstance(value, list):
            if "merge" in f.strategy.split(","):
                original[key] = _merge_list(original[key], value, f)
            else:
                original[key] = _strip_directives(value)
        else:
            original[key] = value
    return original


def _strip_directives(value: Any) -> Any:
    """A value taken over whole (nothing to merge it with): without any directive in it."""
    if isinstance(value, dict):
        if value.get(DIRECTIVE) == "delete":
            return {}
        return {k: _strip_directives(v) for k, v in value.items()
                if k not in (DIRECTIVE, RETAIN_KEYS) and not k.startswith((SET_ORDER, DELETE_PRIMITIVE))}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value
                if not (isinstance(v, dict) and v.get(DIRECTIVE) in ("delete", "replace"))]
    return value


def _same(a: Any, b: Any, key: str) -> bool:
    if key:
        return isinstance(a, dict) and isinstance(b, dict) and a.get(key) == b.get(key)
    return a == b


def _position(order: list, item: Any, key: str) -> int:
    for i, o in enumerate(order):
        if _same(o, item, key):
            return i
    return -1


def _merge_list(original: list, patch: list, f: Field, order: Optional[list] = None) -> list:
    """mergeSlice: merge patch items into original by merge key (or as a set of scalars), then
    put the result in order: patch items by $setElementOrder (else the patch's own order),
    items only on the server by their old order, interleaved as upstream's mergeSortedSlice."""
    maps = any(isinstance(v, dict) for v in original + patch + (order or []))
    key = f.key if maps else ""
    if maps and not key:
        raise PatchError("cannot merge lists without a merge key")
    merged = list(original)
    if maps:
        items, replace = [], False
        for v in patch:
            if not isinstance(v, dict):
                raise PatchError("a merging list of maps may hold only maps")
            directive = v.get(DIRECTIVE)
            if directive is None:
                items.append(v)
            elif directive == "delete":
                if key not in v:
                    raise PatchError(f"map: {v} does not contain declared merge key: {key}")
                at = _position(merged, v, key)
                if at >= 0:
                    del merged[at]
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise PatchError("merging lists cannot yet be specified in the patch")
            else:
                raise PatchError(f"unknown patch type: {directive} in list")
        if replace:
            merged, items = [_strip_directives(v) for v in items], []
        for v in items:
            if key not in v:
                raise PatchError(f"map: {v} does not contain declared merge key: {key}")
            at = _position(merged, v, key)
            if at >= 0:
                merged[at] = _merge_map(merged[at], v, f.type or EMPTY)
            else:
                merged.append(_strip_directives(v))
        patch = items
    else:
        for v in patch:
            if v not in merged:
                merged.append(v)
    wanted = order if order is not None else patch
    if order is not None:
        # Every item of the patch list must appear in $setElementOrder, in the same order.
        positions = [_position(order, v, key) for v in patch]
        if any(p < 0 for p in positions) or positions != sorted(positions):
            raise PatchError("the order in $setElementOrder and in the patch list doesn't match")
    in_patch = [v for v in merged if _position(wanted, v, key) >= 0]
    server_only = [v for v in merged if _position(wanted, v, key) < 0]
    in_patch.sort(key=lambda v: _position(wanted, v, key))
    server_only.sort(key=lambda v: (_position(original, v, key) < 0, _position(original, v, key)))
    return _merge_sorted(server_only, in_patch, original, key)


def _merge_sorted(left: list, right: list, server: list, key: str) -> list:
    """mergeSortedSlice: interleave server-only items (left) into the patch's (right), keeping
    each list's own order; a left item goes first when the live list had it first."""
    out, i, j = [], 0, 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li, ri = _position(server, left[i], key), _position(server, right[j], key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def apply_patch(doc: dict, patch: Any, content_type: str, kind: str) -> dict:
    """The patched copy of doc for a PATCH request's Content-Type (without parameters)."""
    if content_type == "application/json-patch+json":
        result = json_patch(doc, patch)
    elif content_type == "application/merge-patch+json":
        result = merge_patch(doc, patch)
    elif content_type == "application/strategic-merge-patch+json":
        result = strategic_merge_patch(doc, patch, SCHEMAS.get(kind, EMPTY))
    else:
        raise ValueError(content_type)
    if not isinstance(result, dict):
        raise PatchError("the patched object is not a JSON object")
    return result
