"""Label selectors, equality- and set-based, as kubectl's -l and the API's matchLabels."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from .errors import InvalidError

# A label key: an optional DNS-subdomain prefix and '/', then a name (at most one '/').
_KEY = (r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_TOKEN = re.compile(r"\s*(!=|==|=|,|\(|\)|!|[^\s,()!=]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str                      # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and "notin" also match objects without the key, as in Kubernetes.
        return labels.get(self.key) not in self.values

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return "!" + self.key
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str] | None) -> "Selector":
        return cls(tuple(Requirement(k, "=", (str(v),)) for k, v in sorted((labels or {}).items())))


def _check(kind: str, text: str, pattern: str, where: dict) -> str:
    if not re.fullmatch(pattern, text):
        raise InvalidError(f"invalid label {kind} in selector", value=text, **where)
    return text


def parse_selector(text: str, **where) -> Selector:
    """Parse 'name=redis-slave,env!=production,tier in (a,b),!canary,role'."""
    tokens = _TOKEN.findall(text or "")
    if "".join(tokens).replace(" ", "") != re.sub(r"\s", "", text or ""):
        raise InvalidError("unable to parse selector", value=text, **where)
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise InvalidError("unexpected end of selector", value=text, **where)
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        tok = take()
        if tok == "!":
            reqs.append(Requirement(_check("key", take(), _KEY, where), "!"))
        else:
            key = _check("key", tok, _KEY, where)
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt == ",":
                reqs.append(Requirement(key, "exists"))
            elif nxt in ("=", "==", "!="):
                take()
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    take()
                op = "!=" if nxt == "!=" else "="
                reqs.append(Requirement(key, op, (_check("value", value, _VALUE, where),)))
            elif nxt in ("in", "notin"):
                take()
                if take() != "(":
                    raise InvalidError(f"expected '(' after '{nxt}'", value=text, **where)
                values: list[str] = []
                while True:
                    tok = take()
                    if tok == ")":
                        break
                    if tok == ",":
                        continue
                    values.append(_check("value", tok, _VALUE, where))
                    if i < len(tokens) and tokens[i] not in (",", ")"):
                        raise InvalidError(f"found '{tokens[i]}', expected: ',' or ')'",
                                           value=text, **where)
                if not values:
                    raise InvalidError(f"'{nxt}' needs at least one value", value=text, **where)
                reqs.append(Requirement(key, nxt, tuple(values)))
            else:
                raise InvalidError(f"unexpected '{nxt}' after key '{key}'", value=text, **where)
        if i < len(tokens):
            if tokens[i] != ",":
                raise InvalidError(f"expected ',' before '{tokens[i]}'", value=text, **where)
            i += 1
            if i == len(tokens):
                raise InvalidError("selector ends with ','", value=text, **where)
    return Selector(tuple(reqs))


def selector_from_api(spec: Mapping | None, **where) -> Selector:
    """A LabelSelector object (matchLabels + matchExpressions) or a plain map (RC, Service)."""
    if not spec:
        return Selector()
    if "matchLabels" not in spec and "matchExpressions" not in spec:
        return Selector.from_labels({str(k): str(v) for k, v in spec.items()})
    base = where.get("field") or "selector"

    def at(path: str) -> dict:
        return {**where, "field": f"{base}.{path}"}

    labels = spec.get("matchLabels")
    if labels is not None and not isinstance(labels, Mapping):
        raise InvalidError("must be a mapping", value=labels, **at("matchLabels"))
    reqs = list(Selector.from_labels(labels).requirements)
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    exprs = spec.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise InvalidError("must be a list", value=exprs, **at("matchExpressions"))
    for i, expr in enumerate(exprs):
        path = f"matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise InvalidError("must be a mapping", value=expr, **at(path))
        if not expr.get("key"):
            raise InvalidError("Required value", **at(f"{path}.key"))
        op = ops.get(expr.get("operator"))
        if op is None:
            raise InvalidError("operator must be In, NotIn, Exists or DoesNotExist",
                               value=expr.get("operator"), **at(f"{path}.operator"))
        values = expr.get("values") or []
        if not isinstance(values, list):
            raise InvalidError("must be a list", value=values, **at(f"{path}.values"))
        if op in ("in", "notin") and not values:
            raise InvalidError("Required value: must be specified when `operator` is 'In' or 'NotIn'",
                               **at(f"{path}.values"))
        if op in ("exists", "!") and values:
            raise InvalidError("may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                               value=values, **at(f"{path}.values"))
        reqs.append(Requirement(str(expr["key"]), op, tuple(str(v) for v in values)))
    return Selector(tuple(reqs))
