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
from .schema import LIST, find_unknown, unknown_field_message

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
LESSON_FILE = "lesson.yaml"     # a course lesson's checks (netlab/course), not a manifest


# Limits on what one manifest file may ask of the loader. A lab directory may come from the
# internet: a few hundred bytes of YAML must not cost gigabytes or a 3,000-line traceback.
MAX_FILE_BYTES = 4 * 1024 * 1024      # per manifest file
MAX_DEPTH = 100                       # nesting of mappings and lists
MAX_ALIASES = 100                     # uses of YAML aliases (*name) per document
MAX_NODES = 200_000                   # YAML nodes per document, each alias counted expanded


class _Refused(yaml.MarkedYAMLError):
    """A document the guarded loader will not build."""


class _Guard(yaml.composer.Composer):
    """PyYAML's composer with limits on nesting depth and on alias expansion ("billion laughs").

    The composer is where both are cheap to see: it meets every node once, and an alias is
    a second reference to a node already built, whose expanded size is already known.
    """

    def _init_guard(self):
        self._depth = 0
        self._aliases = 0
        self._open: set[str] = set()          # anchors whose node is still being composed
        self._sizes: dict[int, int] = {}      # id(node) -> its node count, aliases expanded

    def _refuse(self, message: str, mark) -> None:
        raise _Refused(problem=message, problem_mark=mark)

    def compose_document(self):
        self._aliases, self._sizes, self._open = 0, {}, set()
        try:
            return super().compose_document()
        finally:
            self._sizes = {}

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                self._refuse(f"more than {MAX_ALIASES} YAML aliases in one document (the limit)",
                             event.start_mark)
            if event.anchor in self._open:
                self._refuse(f"alias *{event.anchor} refers to a node that contains it "
                             "(a recursive structure)", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            self._refuse(f"nested deeper than {MAX_DEPTH} levels (the limit)", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor)
        sizes = self._sizes
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(sizes.get(id(child), 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(sizes.get(id(k), 1) + sizes.get(id(v), 1) for k, v in node.value)
        else:
            size = 1
        if size > MAX_NODES:
            self._refuse(f"the document expands to more than {MAX_NODES} YAML nodes (the limit; "
                         "each use of an alias counts in full)", event.start_mark)
        sizes[id(node)] = size
        return node


class _GuardedLoader(_Guard, yaml.SafeLoader):
    """SafeLoader, guarded: pure Python throughout."""

    def __init__(self, stream):
        yaml.SafeLoader.__init__(self, stream)
        self._init_guard()


if getattr(yaml, "__with_libyaml__", False):
    class _FastGuardedLoader(_Guard, yaml.cyaml.CParser, yaml.constructor.SafeConstructor,
                             yaml.resolver.Resolver):
        """libyaml scans and parses (as CSafeLoader does, several times faster); the guarded
        Python composer above builds the nodes, so the limits hold all the same."""

        def __init__(self, stream):
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._init_guard()

    _Loader = _FastGuardedLoader
else:                                   # pragma: no cover - PyYAML built without libyaml
    _Loader = _GuardedLoader


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size <= MAX_FILE_BYTES:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            size = len(data)
    except OSError as exc:
        raise LabError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    if size > MAX_FILE_BYTES:
        raise LabError(f"file too large: {size} bytes; a manifest file may have at most "
                       f"{MAX_FILE_BYTES // (1024 * 1024)} MiB ({MAX_FILE_BYTES} bytes)",
                       file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabError(f"not UTF-8 text (byte {exc.start + 1})", file=str(path)) from None


def _parse(text: str, loader) -> list:
    return [d for d in yaml.load_all(text, Loader=loader) if d is not None]


def _read_documents(path: Path) -> list:
    text = _read_text(path)
    shown = str(path)
    try:
        try:
            return _parse(text, _Loader)
        except yaml.YAMLError as exc:
            if isinstance(exc, _Refused) or _Loader is _GuardedLoader:
                raise
            # Errors are rare: parse again in pure Python, whose messages say more ("found
            # character '\t' that cannot start any token") than libyaml's, and whose depth
            # limit is ours rather than libyaml's own.
            _parse(text, _GuardedLoader)
            raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [""])[0]
        what = "refused" if isinstance(exc, _Refused) else "invalid YAML"
        raise LabError(f"{what}: {where}{problem}", file=shown) from None
    except RecursionError:
        raise LabError(f"refused: nested deeper than {MAX_DEPTH} levels", file=shown) from None
    except (ValueError, TypeError, OverflowError, ArithmeticError, LookupError) as exc:
        # A constructor that chokes on a value, such as a timestamp with month 13.
        raise LabError(f"invalid YAML: {type(exc).__name__}: {exc}", file=shown) from None


def manifest_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LabError("no such lab directory or file", file=str(path))
    files = sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts)
                   and p.name != LESSON_FILE)
    if not files:
        raise LabError("no manifests (*.yaml, *.yml, *.json) found", file=str(path))
    return files


def read_objects(path: Path) -> tuple[Optional[dict], Optional[str], list]:
    """Return (lab.yaml document, its file, parsed Kubernetes objects) found under path."""
    lab_doc, lab_file, objects = None, None, []
    for file in manifest_files(path):
        shown = os.path.relpath(file) if not os.path.isabs(str(path)) else str(file)
        for index, doc in enumerate(_read_documents(file)):
            if isinstance(doc, dict) and doc.get("kind") == "List":
                docs = _list_items(doc, shown)
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


def _list_items(doc: dict, file: str) -> list:
    """The items of a `kind: List` document (what `kubectl get -o yaml` writes for many objects)."""
    unknown = find_unknown(doc, LIST)
    if unknown:
        raise InvalidError(unknown_field_message(*unknown), file=file, obj="List")
    items = doc.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidError("must be a list", value=items, file=file, obj="List", field="items")
    return items


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
    if addons:
        from .addons import INGRESS_NAMESPACE, INGRESS_SOURCE, ingress_nginx, wants_ingress
        if wants_ingress(cfg, objects):
            own_ns = any(o.kind == "Namespace" and o.meta.name == INGRESS_NAMESPACE for o in objects)
            objects = objects + [parse_object(doc, INGRESS_SOURCE) for doc in ingress_nginx(cfg, own_ns)]
    if addons and not any(o.kind == "Service" and o.meta.key == "default/kubernetes" for o in objects):
        # The `kubernetes` Service (issue 10, item 5); a lab that brings its own keeps that one.
        from .addons import KUBERNETES_SOURCE, kubernetes_service
        objects = [parse_object(doc, KUBERNETES_SOURCE) for doc in kubernetes_service(cfg, cluster.nodes)] + objects
    cluster.admit(objects)
    return cluster


def load_objects(path: str | Path) -> list:
    """Objects for `apply -f`: manifests only; a Lab document is refused."""
    lab_doc, lab_file, objects = read_objects(Path(path))
    if lab_doc is not None:
        raise InvalidError("a Lab document cannot be applied to a running lab; use `netlab up`",
                           file=lab_file, obj="Lab")
    return objects
