"""Ingress, IngressClass and Secret: the objects the ingress controller add-on reads.

networking.k8s.io/v1 Ingress (and the documents' era extensions/v1beta1 and
networking.k8s.io/v1beta1 Ingress, loaded unchanged and read with the same meaning),
networking.k8s.io/v1 IngressClass, and v1 Secret (type kubernetes.io/tls: base64 `data` as
`kubectl create secret tls` writes it, or `stringData`). Validated the way the API server
validates them, and more strictly where a value ends up in nginx's configuration: a path or
host that could break out of its nginx directive is refused when the lab is loaded.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Optional

from .names import check_dns_label, check_dns_subdomain
from . import objects as _objects
from .objects import Meta, _Where, parse_meta
from .schema import INGRESS_SCHEMAS, find_unknown, unknown_field_message

V1 = "networking.k8s.io/v1"
# The first is the version netlab serves; the others load unchanged (served until 1.22).
API_VERSIONS = {"Ingress": (V1, "extensions/v1beta1", "networking.k8s.io/v1beta1"),
                "IngressClass": (V1,), "Secret": ("v1",)}

PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
TLS_TYPE = "kubernetes.io/tls"
CONTROLLER = "k8s.io/ingress-nginx"           # ingress-nginx's spec.controller
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SSL_REDIRECT_ANNOTATION = "nginx.ingress.kubernetes.io/ssl-redirect"

# What a path may hold: ingress-nginx's strict path validation (letters, digits and
# / _ . - ~ plus the URL's other unreserved and percent characters), so nothing can end an
# nginx `location` and start a directive of its own.
_PATH = re.compile(r"^/[A-Za-z0-9/_.~%!&()*+,=:@-]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


# ---------------------------------------------------------------------- the objects


@dataclass
class IngressBackend:
    service: str = ""            # the Service's name, in the Ingress's namespace
    port_name: str = ""          # service.port.name, or ""
    port_number: int = 0         # service.port.number, or 0
    resource: str = ""           # "Kind/name" of a resource backend (not served by nginx)

    def __str__(self) -> str:
        if self.resource:
            return self.resource
        return f"{self.service}:{self.port_name or self.port_number}"


@dataclass
class IngressPath:
    path: str
    path_type: str
    backend: IngressBackend


@dataclass
class IngressRule:
    host: str                    # "" = every host; "*.example.net" = one label under it
    paths: list[IngressPath] = field(default_factory=list)


@dataclass
class IngressTLS:
    hosts: list[str]
    secret: str                  # secretName ("" = the controller's default certificate)


@dataclass
class Ingress:
    meta: Meta
    api_version: str = V1
    class_name: str = ""         # spec.ingressClassName
    default_backend: Optional[IngressBackend] = None
    rules: list[IngressRule] = field(default_factory=list)
    tls: list[IngressTLS] = field(default_factory=list)
    created: float = 0.0

    kind = "Ingress"

    @property
    def class_annotation(self) -> str:
        return self.meta.annotations.get(CLASS_ANNOTATION, "")

    def hosts(self) -> list[str]:
        return [r.host for r in self.rules]

    def tls_hosts(self) -> set[str]:
        return {h for t in self.tls for h in t.hosts}

    def backends(self) -> list[IngressBackend]:
        found = [self.default_backend] if self.default_backend else []
        return found + [p.backend for r in self.rules for p in r.paths]


@dataclass
class IngressClass:
    meta: Meta
    controller: str = ""

    kind = "IngressClass"

    @property
    def is_default(self) -> bool:
        return self.meta.annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"


@dataclass
class Secret:
    meta: Meta
    type: str = "Opaque"
    data: dict[str, bytes] = field(default_factory=dict)     # decoded

    kind = "Secret"

    @property
    def pem(self) -> bytes:
        """What nginx reads for a TLS secret: the certificate (chain), then the key."""
        crt, key = self.data.get("tls.crt", b""), self.data.get("tls.key", b"")
        return crt.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n"


# ---------------------------------------------------------------------- parsing


def check_host(host: str) -> Optional[str]:
    """Why `host` is not an Ingress rule's host (a DNS name, or *. and one), or None."""
    name = host[2:] if host.startswith("*.") else host
    if re.fullmatch(r"[0-9.]+", name):
        return "must be a DNS name, not an IP address"
    problem = check_dns_subdomain(name)
    if problem and "*" in host:
        return "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain"
    return problem


def _backend(raw, path: str, w: _Where, beta: bool) -> IngressBackend:
    raw = w.map(raw, path)
    if "resource" in raw and raw["resource"] is not None:
        res = w.map(raw["resource"], f"{path}.resource")
        if raw.get("service") or raw.get("serviceName"):
            raise w.err(path, "cannot set both resource and service backends")
        kind = w.str(res.get("kind"), f"{path}.resource.kind", required=True)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,62}", kind):
            raise w.err(f"{path}.resource.kind", "must be a kind name (letters and digits)", kind)
        name = w.str(res.get("name"), f"{path}.resource.name", required=True)
        if check_dns_subdomain(name):
            raise w.err(f"{path}.resource.name", check_dns_subdomain(name), name)
        return IngressBackend(resource=f"{kind}/{name}")
    if beta:
        name = w.str(raw.get("serviceName"), f"{path}.serviceName", required=True)
        port = raw.get("servicePort")
        if port is None or port == "":
            raise w.err(f"{path}.servicePort", "Required value")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, int) and not isinstance(port, bool):
            number, pname = w.int(port, f"{path}.servicePort", 1, 65535), ""
        else:
            number, pname = 0, w.port_name(w.str(port, f"{path}.servicePort"), f"{path}.servicePort")
        svc_path = f"{path}.serviceName"
    else:
        svc = w.map(raw.get("service"), f"{path}.service")
        if not svc:
            raise w.err(path, "one backend (service or resource) must be specified")
        name = w.str(svc.get("name"), f"{path}.service.name", required=True)
        port = w.map(svc.get("port"), f"{path}.service.port")
        has_name, has_number = bool(port.get("name")), port.get("number") not in (None, 0)
        if has_name == has_number:
            raise w.err(f"{path}.service.port", "port name or number is required" if not has_name
                        else "cannot set both port name & port number")
        pname = w.port_name(w.str(port.get("name"), f"{path}.service.port.name"),
                            f"{path}.service.port.name") if has_name else ""
        number = w.int(port.get("number"), f"{path}.service.port.number", 1, 65535) if has_number else 0
        svc_path = f"{path}.service.name"
    problem = check_dns_label(name)
    if problem:
        raise w.err(svc_path, problem, name)
    return IngressBackend(service=name, port_name=pname, port_number=number)


def _path(raw, ppath: str, w: _Where, beta: bool) -> IngressPath:
    raw = w.map(raw, ppath)
    path_type = w.str(raw.get("pathType"), f"{ppath}.pathType")
    if not path_type:
        if not beta:
            raise w.err(f"{ppath}.pathType", "Required value: pathType must be specified")
        path_type = "ImplementationSpecific"      # v1beta1's default
    if path_type not in PATH_TYPES:
        raise w.err(f"{ppath}.pathType", 'Unsupported value: supported values: "Exact", '
                    '"ImplementationSpecific", "Prefix"', path_type)
    text = w.str(raw.get("path"), f"{ppath}.path")
    if not text:
        if path_type != "ImplementationSpecific":
            raise w.err(f"{ppath}.path", "Required value: must be an absolute path")
        text = "/"
    if not text.startswith("/"):
        raise w.err(f"{ppath}.path", "must be an absolute path", text)
    if path_type != "ImplementationSpecific" and ("//" in text or "/./" in text or "/../" in text
                                                  or text.endswith(("/..", "/."))):
        raise w.err(f"{ppath}.path", "must not contain '//', '/./' or '/../' segments", text)
    if not _PATH.match(text):
        raise w.err(f"{ppath}.path", "may hold only letters, digits and / _ . - ~ % ! & ( ) * + , = : @ "
                    "(netlab's nginx takes paths literally: no regular expressions, spaces, ';', "
                    "'{' or quotes)", text)
    return IngressPath(text, path_type, _backend(raw.get("backend"), f"{ppath}.backend", w, beta))


def parse_ingress(doc: dict, w: _Where) -> Ingress:
    api = doc.get("apiVersion")
    beta = api != V1
    unknown = find_unknown(doc, INGRESS_SCHEMAS[api])
    if unknown:
        from .errors import InvalidError
        raise InvalidError(unknown_field_message(*unknown), file=w.file, obj=w.obj)
    meta = parse_meta(doc, w)
    spec = w.map(doc.get("spec"), "spec")
    class_name = w.str(spec.get("ingressClassName"), "spec.ingressClassName")
    if class_name and check_dns_subdomain(class_name):
        raise w.err("spec.ingressClassName", check_dns_subdomain(class_name), class_name)
    if class_name and meta.annotations.get(CLASS_ANNOTATION):
        raise w.err(f"metadata.annotations[{CLASS_ANNOTATION}]",
                    "can not be set when the class field is also set")
    default_key = "backend" if beta else "defaultBackend"
    default = (_backend(spec[default_key], f"spec.{default_key}", w, beta)
               if spec.get(default_key) is not None else None)
    rules = []
    for i, rr in enumerate(w.list(spec.get("rules"), "spec.rules")):
        rpath = f"spec.rules[{i}]"
        rr = w.map(rr, rpath)
        host = w.str(rr.get("host"), f"{rpath}.host")
        if host:
            problem = check_host(host)
            if problem:
                raise w.err(f"{rpath}.host", problem, host)
        http = w.map(rr.get("http"), f"{rpath}.http")
        if "http" in rr and not w.list(http.get("paths"), f"{rpath}.http.paths"):
            raise w.err(f"{rpath}.http.paths", "Required value")
        paths = [_path(rp, f"{rpath}.http.paths[{j}]", w, beta)
                 for j, rp in enumerate(w.list(http.get("paths"), f"{rpath}.http.paths"))]
        rules.append(IngressRule(host, paths))
    if not rules and default is None:
        raise w.err("spec", f"either `{default_key}` or `rules` must be specified")
    tls = []
    for i, rt in enumerate(w.list(spec.get("tls"), "spec.tls")):
        tpath = f"spec.tls[{i}]"
        rt = w.map(rt, tpath)
        hosts = w.strlist(rt.get("hosts"), f"{tpath}.hosts")
        for j, h in enumerate(hosts):
            problem = check_host(h)
            if problem:
                raise w.err(f"{tpath}.hosts[{j}]", problem, h)
        secret = w.str(rt.get("secretName"), f"{tpath}.secretName")
        if secret and check_dns_subdomain(secret):
            raise w.err(f"{tpath}.secretName", check_dns_subdomain(secret), secret)
        tls.append(IngressTLS(hosts, secret))
    return Ingress(meta=meta, api_version=api, class_name=class_name, default_backend=default,
                   rules=rules, tls=tls)


def parse_ingress_class(doc: dict, w: _Where) -> IngressClass:
    meta = parse_meta(doc, w, namespaced=False)
    spec = w.map(doc.get("spec"), "spec")
    controller = w.str(spec.get("controller"), "spec.controller", required=True)
    if len(controller) > 250 or "/" not in controller:
        raise w.err("spec.controller", "must be a domain-prefixed path (such as 'acme.io/foo')", controller)
    value = meta.annotations.get(DEFAULT_CLASS_ANNOTATION)
    if value is not None and value not in ("true", "false"):
        raise w.err(f"metadata.annotations[{DEFAULT_CLASS_ANNOTATION}]", 'must be "true" or "false"', value)
    return IngressClass(meta=meta, controller=controller)


def parse_secret(doc: dict, w: _Where) -> Secret:
    meta = parse_meta(doc, w)
    stype = w.str(doc.get("type"), "type") or "Opaque"
    data: dict[str, bytes] = {}
    for key, value in w.map(doc.get("data"), "data").items():
        dpath = f"data[{key}]"
        if not isinstance(key, str) or not _SECRET_KEY.match(key) or len(key) > 253:
            raise w.err(dpath, "a valid config key must consist of alphanumeric characters, '-', '_' or '.'", key)
        text = w.str(value, dpath)
        try:
            data[key] = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise w.err(dpath, "illegal base64 data (data holds base64; use stringData for plain text)",
                        text) from None
    for key, value in w.map(doc.get("stringData"), "stringData").items():
        if not isinstance(key, str) or not _SECRET_KEY.match(key):
            raise w.err(f"stringData[{key}]", "a valid config key must consist of alphanumeric "
                        "characters, '-', '_' or '.'", key)
        data[key] = w.str(value, f"stringData[{key}]", text=True).encode()
    if sum(len(v) for v in data.values()) > 1024 * 1024:
        raise w.err("data", "Too long: must have at most 1048576 bytes")
    if stype == TLS_TYPE:
        for key, label in (("tls.crt", "CERTIFICATE"), ("tls.key", "PRIVATE KEY")):
            if key not in data:
                raise w.err(f"data[{key}]", "Required value")
            problem = check_pem(data[key], label)
            if problem:
                raise w.err(f"data[{key}]", problem)
    return Secret(meta=meta, type=stype, data=data)


# ---------------------------------------------------------------------- PEM, without a crypto library

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """The PEM blocks of data as (label, DER bytes); a block whose base64 is broken raises ValueError."""
    out = []
    for m in _PEM.finditer(data):
        body = b"".join(line.strip() for line in m.group(2).splitlines()
                        if line.strip() and b":" not in line)     # skip RFC 1421 headers
        out.append((m.group(1).decode(), base64.b64decode(body, validate=True)))
    return out


def _der_ok(der: bytes) -> bool:
    """A DER SEQUENCE whose length covers exactly the bytes given (what a cert or key is)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    n, pos = der[1], 2
    if n & 0x80:
        count = n & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            return False
        n, pos = int.from_bytes(der[2:2 + count], "big"), 2 + count
    return pos + n == len(der)


def check_pem(data: bytes, want: str) -> Optional[str]:
    """Why data is not PEM of kind want (CERTIFICATE, or any PRIVATE KEY), or None."""
    try:
        blocks = pem_blocks(data)
    except (binascii.Error, ValueError):
        return "tls: failed to parse PEM: its base64 is broken"
    wanted = [der for label, der in blocks if label == want or (want == "PRIVATE KEY" and label.endswith("PRIVATE KEY"))]
    if not wanted:
        what = "certificate" if want == "CERTIFICATE" else "private key"
        return f"tls: failed to find any PEM data in {what} input"
    if not all(_der_ok(der) for der in wanted):
        return "tls: failed to parse PEM: not a DER structure"
    return None


PARSERS = {"Ingress": parse_ingress, "IngressClass": parse_ingress_class, "Secret": parse_secret}
# Registered here, not by objects.py: whichever of the two modules is imported first, both
# are whole before either is used (importing this one first used to fail half-way).
_objects.PARSERS.update(PARSERS)
_objects.KINDS.update({kind: versions[0] for kind, versions in API_VERSIONS.items()})
_objects.OTHER_API_VERSIONS.update({kind: versions[1:] for kind, versions in API_VERSIONS.items()})


# ---------------------------------------------------------------------- the controller's view


def served_by_nginx(ing: Ingress, classes: dict[str, IngressClass]) -> bool:
    """Whether ingress-nginx takes this Ingress: its class is one whose controller is
    k8s.io/ingress-nginx, or the legacy annotation says nginx, or it names no class and the
    default IngressClass is nginx's (as the admission plugin would have filled it in)."""
    if ing.class_name:
        cls = classes.get(ing.class_name)
        return cls is not None and cls.controller == CONTROLLER
    if ing.class_annotation:
        return ing.class_annotation == "nginx"
    return any(c.is_default and c.controller == CONTROLLER for c in classes.values())
