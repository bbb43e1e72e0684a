"""kubectl's JSONPath templates (-o jsonpath=..., custom-columns), for plain JSON data.

Supported, as in k8s.io/client-go/util/jsonpath: text with {expressions}; .field, ['field'],
[n], [-n], [a:b], [*], ..field (recursive descent), [?(@.path OP value)] filters with ==,
!=, <, >, <=, >= and existence [?(@.path)], {range EXPR}...{end}, quoted literals {"\\n"}.
Several results of one expression are separated by a space; maps and lists print as JSON.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..model.errors import LabError

_TOKEN = re.compile(r"\.\.|\.|\[|\]|'[^']*'|\"[^\"]*\"|[^.\[\]'\"]+")


class JSONPathError(LabError):
    pass


def _split(template: str) -> list[tuple[str, str]]:
    """[(kind, text)]: kind is "text" or "expr"."""
    out, i = [], 0
    while i < len(template):
        start = template.find("{", i)
        if start < 0:
            out.append(("text", template[i:]))
            break
        if start > i:
            out.append(("text", template[i:start]))
        depth, j = 0, start
        while j < len(template):
            if template[j] == "{":
                depth += 1
            elif template[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j >= len(template):
            raise JSONPathError(f"unclosed action in template {template!r}")
        out.append(("expr", template[start + 1:j].strip()))
        i = j + 1
    return out


def _literal(expr: str):
    if len(expr) >= 2 and expr[0] == expr[-1] and expr[0] in "\"'":
        return json.loads('"' + expr[1:-1].replace('"', '\\"') + '"')
    return None


def _children(value: Any) -> list:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _descend(value: Any) -> list:
    out = [value]
    for child in _children(value):
        out.extend(_descend(child))
    return out


def _compare(left: Any, op: str, right: Any) -> bool:
    try:
        if op == "==":
            return left == right or str(left) == str(right)
        if op == "!=":
            return not (left == right or str(left) == str(right))
        return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
    except TypeError:
        return False


def _filter(items: list, cond: str) -> list:
    m = re.match(r"^\?\(\s*@(?P<path>[^=!<>]*?)\s*(?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>.+?))?\s*\)$", cond)
    if not m:
        raise JSONPathError(f"unrecognized filter {cond!r}")
    out = []
    for item in items:
        found = evaluate(m["path"] or "", [item]) if m["path"] else [item]
        if m["op"] is None:
            if found:
                out.append(item)
            continue
        raw = m["value"].strip()
        right = _literal(raw)
        if right is None:
            try:
                right = json.loads(raw)
            except ValueError:
                right = evaluate(raw[1:], [item])[0] if raw.startswith("@") and evaluate(raw[1:], [item]) else raw
        if any(_compare(f, m["op"], right) for f in found):
            out.append(item)
    return out


def evaluate(expr: str, current: list) -> list:
    """The values an expression (.a.b[0], ..name, [*], ...) selects from each current value."""
    expr = expr.strip()
    if expr.startswith("$"):
        expr = expr[1:]
    i = 0
    while i < len(expr):
        if expr.startswith("..", i):
            current = [d for v in current for d in _descend(v)]
            i += 2
            continue
        if expr[i] == ".":
            i += 1
            continue
        if expr[i] == "[":
            j = expr.index("]", i) if not expr.startswith("[?(", i) else expr.index(")]", i) + 1
            inner = expr[i + 1:j].strip()
            i = j + 1
            if inner == "*":
                current = [c for v in current for c in _children(v)]
            elif inner.startswith("?("):
                current = _filter([c for v in current for c in (v if isinstance(v, list) else [v])], inner)
            elif inner[:1] in "'\"":
                keys = [k.strip().strip("'\"") for k in inner.split(",")]
                current = [v[k] for v in current if isinstance(v, dict) for k in keys if k in v]
            elif ":" in inner:
                a, _, b = inner.partition(":")
                b = b.split(":")[0]
                current = [x for v in current if isinstance(v, list)
                           for x in v[int(a) if a.strip() else None:int(b) if b.strip() else None]]
            else:
                try:
                    n = int(inner)
                except ValueError:
                    raise JSONPathError(f"invalid array index {inner!r}") from None
                current = [v[n] for v in current if isinstance(v, list) and -len(v) <= n < len(v)]
            continue
        m = re.match(r"[^.\[]+", expr[i:])
        name = m.group(0)
        i += len(name)
        if name == "*":
            current = [c for v in current for c in _children(v)]
        else:
            current = [v[name] for v in current if isinstance(v, dict) and name in v]
    return current


def text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def render(template: str, data: Any) -> str:
    parts = _split(template)
    out: list[str] = []
    _run(parts, 0, len(parts), data, out)
    return "".join(out)


def _run(parts: list, start: int, end: int, data: Any, out: list) -> None:
    i = start
    while i < end:
        kind, body = parts[i]
        if kind == "text":
            out.append(body)
            i += 1
            continue
        literal = _literal(body)
        if literal is not None:
            out.append(literal)
            i += 1
            continue
        if body.startswith("range "):
            depth, j = 1, i + 1
            while j < end:
                if parts[j][0] == "expr" and parts[j][1].startswith("range "):
                    depth += 1
                elif parts[j] == ("expr", "end"):
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= end:
                raise JSONPathError("{range} without {end}")
            for item in evaluate(body[6:], [data]):
                _run(parts, i + 1, j, item, out)
            i = j + 1
            continue
        if body == "end":
            raise JSONPathError("{end} without {range}")
        values = evaluate(body, [data])
        out.append(" ".join(text(v) for v in values))
        i += 1
