"""Reading a lab from disk: a directory (or one multi-document file) of manifests + lab.yaml."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import yaml

from .cluster import Cluster, make_nodes
from .config import LabConfig, parse_lab
from .errors import InvalidError, LabError
from .names import validate_lab_name
from .objects import parse_object

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _read_documents(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabError(f"cannot read: {exc.strerror}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise LabError(f"not UTF-8 text (byte {exc.start + 1})", file=str(path)) from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LabError(f"invalid YAML: {where}{problem}", file=str(path)) from None


def manifest_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LabError("no such lab directory or file", file=str(path))
    files = sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise LabError("no manifests (*.yaml, *.yml, *.json) found", file=str(path))
    return files


def read_objects(path: Path) -> tuple[Optional[dict], Optional[str], list]:
    """Return (lab.yaml document, its file, parsed Kubernetes objects) found under path."""
    lab_doc, lab_file, objects = None, None, []
    for file in manifest_files(path):
        shown = os.path.relpath(file) if not os.path.isabs(str(path)) else str(file)
        for index, doc in enumerate(_read_documents(file)):
            if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                docs = doc["items"]
            else:
                docs = [doc]
            for item in docs:
                if isinstance(item, dict) and item.get("kind") == "Lab":
                    if lab_doc is not None:
                        raise InvalidError(f"a second Lab document (the first is in {lab_file})",
                                           file=shown, obj="Lab")
                    lab_doc, lab_file = item, shown
                    continue
                objects.append(parse_object(item, shown, index))
    return lab_doc, lab_file, objects


def load_lab(path: str | Path, *, name: str | None = None, nodes: int | None = None,
             backend: str | None = None, proxy_mode: str | None = None,
             seed: int | None = None, addons: bool = True) -> Cluster:
    """Read and admit a whole lab; every error is a one-line LabError, and nothing is touched.

    `addons=False` leaves out the cluster add-ons (kube-dns) even when lab.yaml enables them.
    """
    path = Path(path)
    lab_doc, lab_file, objects = read_objects(path)
    default_name = (path if path.is_dir() else path.with_suffix("")).resolve().name.lower()
    default_name = "".join(ch if ch.isalnum() else "-" for ch in default_name).strip("-") or "lab"
    if name:
        validate_lab_name(name, file="--name")
    cfg: LabConfig = parse_lab(lab_doc, default_name=default_name, file=lab_file or str(path),
                               nodes_override=nodes, name_override=name,
                               backend_override=backend, proxy_override=proxy_mode)
    cluster = Cluster(config=cfg, nodes=make_nodes(cfg), seed=seed)
    if cfg.dns and addons:
        from .addons import ADDON_SOURCE, kube_dns
        objects = [parse_object(doc, ADDON_SOURCE) for doc in kube_dns(cfg)] + objects
    cluster.admit(objects)
    return cluster


def load_objects(path: str | Path) -> list:
    """Objects for `apply -f`: manifests only; a Lab document is refused."""
    lab_doc, lab_file, objects = read_objects(Path(path))
    if lab_doc is not None:
        raise InvalidError("a Lab document cannot be applied to a running lab; use `netlab up`",
                           file=lab_file, obj="Lab")
    return objects
