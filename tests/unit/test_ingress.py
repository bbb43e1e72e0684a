"""Ingress, IngressClass and Secret objects, nginx.conf rendering and the spec's matching
(issue 13), without root: the rendered configuration is checked by the real `nginx -t`."""
from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from netlab.dataplane import endpoints
from netlab.model.ingress import check_pem, served_by_nginx
from netlab.model.loader import load_lab
from netlab.model.objects import parse_object
from netlab.plan.ingress import expected_route, render, server_name

from .model_helpers import raises_at

REPO = Path(__file__).resolve().parents[2]
CAFE = REPO / "labs" / "ingress"


def obj(text: str):
    return parse_object(yaml.safe_load(text), "f.yaml")


def v1(spec: str, name: str = "web") -> str:
    return f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n{spec}"


def test_v1_and_v1beta1_mean_the_same():
    new = obj(v1("""
  rules:
  - host: a.example.net
    http:
      paths:
      - {path: /x, pathType: Prefix, backend: {service: {name: s, port: {name: http}}}}
"""))
    old = obj("""
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: web}
spec:
  backend: {serviceName: d, servicePort: 8080}
  rules:
  - host: a.example.net
    http:
      paths:
      - {path: /x, backend: {serviceName: s, servicePort: http}}
""")
    assert new.rules[0].paths[0].backend.service == old.rules[0].paths[0].backend.service == "s"
    assert old.rules[0].paths[0].path_type == "ImplementationSpecific"      # v1beta1's default
    assert old.default_backend.port_number == 8080 and old.api_version == "extensions/v1beta1"


@pytest.mark.parametrize("spec,field,why", [
    ("  rules: [{host: a.b, http: {paths: [{path: /x, backend: {service: {name: s, port: {number: 80}}}}]}}]",
     "spec.rules[0].http.paths[0].pathType", "Required value"),
    ("  rules: [{host: a.b, http: {paths: [{path: '/x;return 200', pathType: Prefix, "
     "backend: {service: {name: s, port: {number: 80}}}}]}}]", "spec.rules[0].http.paths[0].path", "may hold only"),
    ("  rules: [{host: 'a.*.b', http: {paths: [{path: /, pathType: Prefix, "
     "backend: {service: {name: s, port: {number: 80}}}}]}}]", "spec.rules[0].host", "wildcard"),
    ("  defaultBackend: {service: {name: s, port: {number: 80, name: http}}}",
     "spec.defaultBackend.service.port", "cannot set both"),
    ("  ingressClassName: nginx", "spec", "either `defaultBackend` or `rules` must be specified"),
    ("  rules: [{host: 10.0.0.1}]", "spec.rules[0].host", "not an IP address"),
])
def test_invalid_ingresses_are_one_line(spec, field, why):
    raises_at(lambda: obj(v1(spec)), "f.yaml", "Ingress/web", field, why)


def test_fields_are_checked_per_version():
    text = v1("  backend: {serviceName: s, servicePort: 80}")
    raises_at(lambda: obj(text), "f.yaml", "Ingress/web", None, 'unknown field "spec.backend"')


def _pem(label: str, der: bytes) -> bytes:
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label.encode(), base64.encodebytes(der).strip(),
                                                            label.encode())


def secret(crt: bytes, key: bytes) -> str:
    return ("apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/tls\ndata:\n"
            f"  tls.crt: {base64.b64encode(crt).decode()}\n  tls.key: {base64.b64encode(key).decode()}\n")


def test_tls_secrets_must_parse():
    der = bytes([0x30, 0x03, 0x02, 0x01, 0x01])
    ok = obj(secret(_pem("CERTIFICATE", der), _pem("EC PRIVATE KEY", der)))
    assert ok.pem.startswith(b"-----BEGIN CERTIFICATE-----") and b"EC PRIVATE KEY" in ok.pem
    raises_at(lambda: obj(secret(b"junk", _pem("PRIVATE KEY", der))), "f.yaml", "Secret/t", "data[tls.crt]",
              "failed to find any PEM data in certificate input")
    raises_at(lambda: obj(secret(_pem("CERTIFICATE", der + b"x"), _pem("PRIVATE KEY", der))), "f.yaml",
              "Secret/t", "data[tls.crt]", "not a DER structure")
    raises_at(lambda: obj("apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ndata: {a: '%%%'}"),
              "f.yaml", "Secret/t", "data[a]", "illegal base64 data")
    assert check_pem(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----", "CERTIFICATE")


def test_which_ingresses_nginx_serves():
    cafe = load_lab(CAFE, name="u1")
    classes = cafe.ingress_classes
    assert served_by_nginx(cafe.ingresses["default/cafe"], classes)          # ingressClassName: nginx
    assert served_by_nginx(cafe.ingresses["default/legacy"], classes)        # the old annotation
    other = obj(v1("  ingressClassName: traefik\n  defaultBackend: {service: {name: s, port: {number: 1}}}"))
    assert not served_by_nginx(other, classes)
    classless = obj(v1("  defaultBackend: {service: {name: s, port: {number: 1}}}"))
    assert served_by_nginx(classless, classes)                               # nginx is the default class


def test_the_addon_comes_with_the_first_ingress(tmp_path):
    (tmp_path / "lab.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    assert "ingress-nginx" not in load_lab(tmp_path, name="u2").namespaces
    cafe = load_lab(CAFE, name="u3")
    svc = cafe.services["ingress-nginx/ingress-nginx-controller"]
    assert svc.type == "LoadBalancer" and [p.node_port for p in svc.ports] == [30080, 30443]
    pod = next(p for p in cafe.pods.values() if p.meta.namespace == "ingress-nginx")
    from netlab.model.podsecurity import for_pod
    assert for_pod(pod, "u3").host_paths == ("/run/netlab/u3/ingress",)


def test_locations_follow_ingress_nginx():
    cafe = load_lab(CAFE, name="u4")
    text = render(cafe, endpoints(cafe, set(cafe.pods)), "/conf").text
    server = text.split("## start server cafe.example.net")[1].split("## end server")[0]
    order = [line.strip() for line in server.splitlines() if line.strip().startswith("location")]
    # Reverse lexical order (ingress-nginx's); Prefix /tea is /tea/ plus = /tea; Exact stays
    # exact; / goes to the default backend.
    assert order == ["location = /tea/special {", "location /tea/ {", "location = /tea {",
                     "location /coffee/ {", "location = /coffee {", "location / {"]
    assert "return 308 https://$host$request_uri;" in server
    assert "ssl_certificate /conf/ssl/default-cafe-tls.pem;" in server
    assert server_name("*.menu.example.net") == r"~^(?<subdomain>[\w-]+)\.menu\.example\.net$"
    assert "server_name ~^(?<subdomain>[\\w-]+)\\.menu\\.example\\.net$;" in text
    tea = sorted(p.pod_ip for p in cafe.pods.values() if p.meta.labels.get("app") == "tea")
    assert f"upstream default-tea-svc-80 {{\n        server {tea[0]}:8080 max_fails=0;" in text


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx-light is not installed (scripts/setup.sh)")
def test_nginx_accepts_the_rendered_configuration(tmp_path):
    cafe = load_lab(CAFE, name="u5")
    conf = tmp_path / "conf"
    (conf / "ssl").mkdir(parents=True)
    rendered = render(cafe, endpoints(cafe, set(cafe.pods)), str(conf))
    for name, pem in rendered.certs.items():
        (conf / "ssl" / name).write_bytes(pem)
    shutil.copy(conf / "ssl" / "default-cafe-tls.pem", conf / "ssl" / "default-fake-certificate.pem")
    # The pod's private /tmp and /run, here under tmp_path; no user switch without root.
    text = (rendered.text.replace("/tmp/nginx-", f"{tmp_path}/nginx-").replace("/run/nginx.pid", f"{tmp_path}/pid")
            .replace("user www-data;\n", ""))
    (conf / "nginx.conf").write_text(text)
    done = subprocess.run(["nginx", "-t", "-q", "-c", str(conf / "nginx.conf"), "-e", "stderr"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("host,path,upstream", [
    ("cafe.example.net", "/tea", "default-tea-svc-80"),
    ("cafe.example.net", "/tea/", "default-tea-svc-80"),
    ("cafe.example.net", "/tea/green", "default-tea-svc-80"),
    ("cafe.example.net", "/teapot", "upstream-default-backend"),
    ("cafe.example.net", "/tea/special", "default-coffee-svc-80"),
    ("cafe.example.net", "/tea/special/", "default-tea-svc-80"),
    ("cafe.example.net", "/coffee", "default-coffee-svc-http"),
    ("today.menu.example.net", "/x", "default-tea-svc-80"),
    ("a.b.menu.example.net", "/x", "upstream-default-backend"),
    ("legacy.example.net", "/anything", "default-coffee-svc-80"),
    ("unknown.example.net", "/tea", "upstream-default-backend"),
])
def test_expected_routes_follow_the_spec(host, path, upstream):
    cafe = load_lab(CAFE, name="u6")
    assert expected_route(cafe, endpoints(cafe, set(cafe.pods)), host, path).upstream == upstream


def test_older_ingress_keeps_a_shared_path_and_missing_services_answer_503(tmp_path):
    (tmp_path / "a.yaml").write_text(v1("""
  rules:
  - host: x.example.net
    http:
      paths:
      - {path: /p, pathType: Prefix, backend: {service: {name: one, port: {number: 80}}}}
""", "first"))
    (tmp_path / "b.yaml").write_text(v1("""
  rules:
  - host: x.example.net
    http:
      paths:
      - {path: /p, pathType: Prefix, backend: {service: {name: two, port: {number: 80}}}}
""", "second"))
    cluster = load_lab(tmp_path, name="u7")
    cluster.ingresses["default/first"].created, cluster.ingresses["default/second"].created = 1.0, 2.0
    out = render(cluster, {}, "/c")
    assert any(r == "PathConflict" for _, r, _ in out.events["default/second"])
    assert [r for _, r, _ in out.events["default/first"]] == ["BackendNotFound"]
    assert "# service \"default/one\" not found\n            return 503;" in out.text
    assert expected_route(cluster, {}, "x.example.net", "/p/q").status == 503
