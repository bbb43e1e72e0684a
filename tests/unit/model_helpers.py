"""Helpers shared by the test_model_* unit tests (not a test module itself)."""
from __future__ import annotations

from pathlib import Path

import pytest

from netlab.model.cluster import Cluster, make_nodes
from netlab.model.config import parse_lab
from netlab.model.errors import LabError
from netlab.model.objects import parse_object

REPO = Path(__file__).resolve().parents[2]
GUESTBOOK = REPO / "labs" / "guestbook"


def where(*parts: str) -> str:
    """The 'file: Kind/name: field: ' prefix a one-line error starts with."""
    return ": ".join(p for p in parts if p) + ": "


def check_error(err: BaseException, file: str | None, obj: str | None, field: str | None,
                *fragments: str) -> str:
    """Assert err renders as ONE line naming file, object and field, and containing fragments."""
    assert isinstance(err, LabError), f"{type(err).__name__}: {err}"
    text = str(err)
    assert "\n" not in text, text
    assert text.startswith(where(file, obj, field)), text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


def raises_at(func, file, obj, field, *fragments) -> str:
    with pytest.raises(LabError) as info:
        func()
    return check_error(info.value, file, obj, field, *fragments)


def lab(spec: dict | None = None, name: str = "unit", file: str = "lab.yaml", **kw):
    doc = {"apiVersion": "netlab/v1", "kind": "Lab", "metadata": {"name": name},
           "spec": {"nodes": 2, **(spec or {})}}
    return parse_lab(doc, default_name=name, file=file, **kw)


def cluster(spec: dict | None = None, seed: int | None = 1) -> Cluster:
    cfg = lab(spec)
    return Cluster(config=cfg, nodes=make_nodes(cfg), seed=seed)


def pod_doc(name: str = "web", *, labels: dict | None = None, namespace: str | None = None,
            containers: list | None = None, **spec) -> dict:
    md = {"name": name, **({"labels": labels} if labels else {}),
          **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": {"containers": containers or [
                {"name": "c", "image": "netexec", "ports": [{"containerPort": 8080, "name": "http"}]}],
                **spec}}


def rc_doc(name: str = "web", replicas: int = 2, labels: dict | None = None, **spec) -> dict:
    labels = labels or {"app": name}
    return {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": dict(labels),
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": "c", "image": "netexec",
                                                           "ports": [{"containerPort": 8080,
                                                                      "name": "http"}]}],
                                           **spec}}}}


def svc_doc(name: str = "web", *, selector: dict | None = None, ports: list | None = None,
            **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector if selector is not None else {"app": name},
                     "ports": ports or [{"port": 80, "targetPort": 8080}], **spec}}


def parse(doc: dict, file: str = "unit.yaml"):
    return parse_object(doc, file)
