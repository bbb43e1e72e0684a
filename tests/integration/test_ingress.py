"""Issue 13: Ingress through a real nginx, with real requests from the outside client
(curl with Host headers, and --resolve for TLS), both API versions, live changes, the CLI
commands the README shows, and nothing left after `down` (the make_lab fixture checks)."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from netlab import engine
from netlab.model import names

from ..conftest import LABS

pytestmark = pytest.mark.root

HTTP, HTTPS = 30080, 30443


def netlab_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True, timeout=90)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def curl(lab: str, *args: str) -> str:
    """curl from the outside client's namespace (192.168.56.2): status line and body."""
    done = subprocess.run(["ip", "netns", "exec", names.client_netns(lab), "curl", "-sk", "--max-time", "5",
                           "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30)
    return done.stdout


def status_body(out: str) -> tuple[int, str]:
    body, _, code = out.rpartition("\n")
    return int(code or 0), body.rstrip("\n")


def hostname(body: str) -> str:
    m = re.search(r"^Hostname: (\S+)", body, re.M)
    return m.group(1) if m else ""


def through(lab: str, host: str, path: str, node_ip: str = "192.168.56.11", tls: bool = False) -> tuple[int, str]:
    if tls:
        return status_body(curl(lab, "--resolve", f"{host}:{HTTPS}:{node_ip}", f"https://{host}:{HTTPS}{path}"))
    return status_body(curl(lab, "-H", f"Host: {host}", f"http://{node_ip}:{HTTP}{path}"))


def wait_for(fn, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@pytest.fixture(scope="module")
def cafe(tmp_path_factory):
    """labs/ingress as the README brings it up, once for the module; always torn down."""
    src = tmp_path_factory.mktemp("cafe") / "ingress"
    shutil.copytree(LABS / "ingress", src)
    name = "t" + uuid.uuid4().hex[:8]
    try:
        netlab_cli("up", str(src), "--name", name)               # as the README says, but a name of its own
        yield engine.load(name)
    finally:
        engine.teardown(name)
        assert not engine.lab_namespaces(name)


def pods_of(cluster, app: str) -> set[str]:
    return {p.meta.name for p in engine.load(cluster.name).pods.values() if p.meta.labels.get("app") == app}


def test_routes_by_host_and_path_from_outside(cafe):
    lab = cafe.name
    tea, coffee = pods_of(cafe, "tea"), pods_of(cafe, "coffee")
    for node_ip in ("192.168.56.11", "192.168.56.12"):      # every node's NodePort
        code, body = through(lab, "cafe.example.net", "/tea", node_ip, tls=True)
        assert code == 200 and hostname(body) in tea, body
        code, body = through(lab, "cafe.example.net", "/coffee/latte", node_ip, tls=True)
        assert code == 200 and hostname(body) in coffee, body
        assert "real path=/coffee/latte" in body           # the path reaches the backend unchanged
    # Exact beats the /tea prefix; Prefix is element-wise: /teapot is no /tea.
    assert hostname(through(lab, "cafe.example.net", "/tea/special", tls=True)[1]) in coffee
    assert hostname(through(lab, "cafe.example.net", "/tea/special/x", tls=True)[1]) in tea
    assert through(lab, "cafe.example.net", "/teapot", tls=True) == (404, "default backend - 404")
    # A wildcard host matches one label, no more; an unknown host gets the default backend.
    assert hostname(through(lab, "today.menu.example.net", "/")[1]) in tea
    assert through(lab, "a.b.menu.example.net", "/") == (404, "default backend - 404")
    assert through(lab, "nowhere.example.net", "/tea") == (404, "default backend - 404")
    # The documents' era extensions/v1beta1 Ingress, loaded unchanged.
    assert hostname(through(lab, "legacy.example.net", "/anything")[1]) in coffee
    # Both tea pods take turns (nginx balances over the endpoints, not the ClusterIP).
    seen = {hostname(through(lab, "cafe.example.net", "/tea", tls=True)[1]) for _ in range(12)}
    assert seen == tea


def test_the_load_balancer_address_and_forwarded_headers(cafe):
    lab = cafe.name
    svc = cafe.services["ingress-nginx/ingress-nginx-controller"]
    lb = svc.load_balancer_ips[0]
    code, body = status_body(curl(lab, "-H", "Host: legacy.example.net", f"http://{lb}/hdr"))
    assert code == 200
    headers = dict(re.findall(r"^\t([a-z-]+)=(.*)$", body.split("Request Headers:")[1], re.M))
    assert headers["host"] == "legacy.example.net"
    assert headers["x-forwarded-host"] == "legacy.example.net"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-real-ip"] == headers["x-forwarded-for"]       # the client nginx saw (after kube-proxy)
    assert headers["x-original-uri"] == "/hdr" and len(headers["x-request-id"]) == 32
    # The backend's client is nginx's pod: the second leg starts there.
    controller = next(p for p in cafe.pods.values() if p.meta.namespace == "ingress-nginx")
    assert f"client_address={controller.pod_ip}" in body
    code, body = through(lab, "cafe.example.net", "/tea", tls=True)
    assert "x-forwarded-proto=https" in body and "x-forwarded-port=443" in body


def test_tls_picks_the_certificate_by_sni_and_redirects_plain_http(cafe):
    lab = cafe.name
    client = names.client_netns(lab)

    def subject(sni: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", client, "openssl", "s_client", "-connect",
                               f"192.168.56.11:{HTTPS}", "-servername", sni], input="", capture_output=True,
                              text=True, timeout=20)
        return next((line for line in done.stdout.splitlines() if line.startswith("subject=")), "")
    assert "cafe.example.net" in subject("cafe.example.net")
    assert "Kubernetes Ingress Controller Fake Certificate" in subject("legacy.example.net")
    out = subprocess.run(["ip", "netns", "exec", client, "curl", "-s", "-o", "/dev/null", "-w",
                          "%{http_code} %{redirect_url}", "-H", "Host: cafe.example.net",
                          f"http://192.168.56.12:{HTTP}/tea"], capture_output=True, text=True, timeout=20).stdout
    assert out == "308 https://cafe.example.net/tea"


def test_get_describe_and_the_rendered_config(cafe):
    lab = cafe.name
    out = netlab_cli("get", "ingress", "--lab", lab).stdout.splitlines()
    assert out[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    lb = cafe.services["ingress-nginx/ingress-nginx-controller"].load_balancer_ips[0]
    row = next(line for line in out if line.startswith("cafe "))
    assert row.split()[1:4] == ["nginx", "cafe.example.net,*.menu.example.net", lb]
    assert "80, 443" in row
    legacy = next(line for line in out if line.startswith("legacy "))
    assert legacy.split()[1:4] == ["<none>", "legacy.example.net", lb] and "80, 443" not in legacy
    text = netlab_cli("describe", "ingress", "cafe", "--lab", lab).stdout
    tea_ips = sorted(p.pod_ip for p in cafe.pods.values() if p.meta.labels.get("app") == "tea")
    assert "cafe-tls terminates cafe.example.net" in text
    assert re.search(r"/tea \(Prefix\)\s+tea-svc:80 \(" + re.escape(",".join(f"{ip}:8080" for ip in tea_ips)), text), text
    assert re.search(r"/tea/special \(Exact\)\s+coffee-svc:80", text)
    # The README's way to read what nginx runs with.
    pod = next(p.meta.name for p in cafe.pods.values() if p.meta.namespace == "ingress-nginx")
    conf = netlab_cli("exec", "--lab", lab, "-n", "ingress-nginx", pod, "--", "cat",
                      f"/run/netlab/{lab}/ingress/nginx.conf").stdout
    assert "server_name cafe.example.net;" in conf and "location = /tea/special {" in conf
    assert re.search(r"upstream default-tea-svc-80 \{\n(\s+server 10\.244\.\d+\.\d+:8080 max_fails=0;\n){2}", conf)
    # nginx runs as a container: its master as root with Docker's capabilities, workers as www-data.
    ps = netlab_cli("exec", "--lab", lab, "-n", "ingress-nginx", pod, "--", "ps", "-eo", "user,args").stdout
    assert re.search(r"^root\s+nginx: master process", ps, re.M) and re.search(r"^www-data\s+nginx: worker", ps, re.M)
    get_secret = netlab_cli("get", "secrets", "--lab", lab).stdout
    assert re.search(r"cafe-tls\s+kubernetes.io/tls\s+2", get_secret)
    assert "k8s.io/ingress-nginx" in netlab_cli("get", "ingressclass", "--lab", lab).stdout


def test_verify_ingress_checks_pass(cafe):
    from netlab.probe.catalog import select
    from netlab.probe.lab import LabView
    from netlab.probe.result import Status
    view = LabView.load(cafe.name)
    for check in select(["ingress-*"]):
        result = check.run(view)
        assert result.status == Status.PASS, (check.id, result.summary)


LIVE = """
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 1
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.k8s.io/echoserver:1.10, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""

INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  rules:
  - host: site.example.net
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""


def test_live_changes_follow_without_restarting_nginx(make_lab, tmp_path):
    cluster = make_lab(manifests=LIVE)
    lab = cluster.name
    assert "ingress-nginx" not in cluster.namespaces          # no Ingress yet: no controller
    (tmp_path / "ing.yaml").write_text(INGRESS)
    netlab_cli("apply", "-f", str(tmp_path / "ing.yaml"), "--lab", lab)     # the first Ingress brings it
    assert wait_for(lambda: through(lab, "site.example.net", "/")[0] == 200, 30)
    master = int(subprocess.run(["pgrep", "-f", f"nginx: master process .*/{lab}/ingress"], capture_output=True,
                                text=True).stdout.split()[0])

    # Add a path whose Service does not exist: accepted, 503, and an event that says why.
    (tmp_path / "ing.yaml").write_text(INGRESS + """\
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
""")
    netlab_cli("apply", "-f", str(tmp_path / "ing.yaml"), "--lab", lab)
    assert through(lab, "site.example.net", "/api/x")[0] == 503
    assert 'service "default/api" not found' in netlab_cli("describe", "ingress", "site", "--lab", lab).stdout
    # ... then the Service: the path routes, with no restart of nginx (a reload).
    (tmp_path / "api.yaml").write_text(LIVE.replace("web", "api"))
    netlab_cli("apply", "-f", str(tmp_path / "api.yaml"), "--lab", lab)
    api = lambda: hostname(through(lab, "site.example.net", "/api/x")[1]).startswith("api-")  # noqa: E731
    assert wait_for(api, 30)

    # Scale the backend: the new pods join the upstream once ready.
    netlab_cli("scale", "rc", "web", "--replicas", "3", "--lab", lab)
    web = {p.meta.name for p in engine.load(lab).pods.values() if p.meta.labels.get("app") == "web"}
    assert len(web) == 3
    seen: set = set()
    assert wait_for(lambda: seen.update(hostname(through(lab, "site.example.net", "/")[1]) for _ in range(6))
                    or seen >= web, 30)
    # Deleting the Ingress: its host falls to the default backend.
    netlab_cli("delete", "ingress", "site", "--lab", lab)
    assert through(lab, "site.example.net", "/") == (404, "default backend - 404")
    assert subprocess.run(["pgrep", "-f", f"nginx: master process .*/{lab}/ingress"], capture_output=True,
                          text=True).stdout.split()[0] == str(master)


def test_default_backend_and_a_bad_tls_secret(make_lab, tmp_path):
    cluster = make_lab(manifests=LIVE + "---\n" + """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
""")
    lab = cluster.name
    code, body = through(cluster.name, "any.example.net", "/whatever")
    assert code == 200 and hostname(body).startswith("web-")        # spec.defaultBackend takes the rest
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
apiVersion: v1
kind: Secret
metadata: {name: broken}
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
""" % (base64.b64encode(b"not a certificate").decode(), base64.b64encode(b"nor a key").decode()))
    done = netlab_cli("apply", "-f", str(bad), "--lab", lab, check=False)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "Secret/broken: data[tls.crt]: tls: failed to find any PEM data in certificate input" in done.stderr


def test_ingress_false_keeps_the_controller_out(make_lab):
    cluster = make_lab(manifests="""
apiVersion: netlab/v1
kind: Lab
metadata: {name: x}
spec: {nodes: 1, dns: false, ingress: false}
---
""" + INGRESS)
    assert "ingress-nginx" not in cluster.namespaces and "default/site" in cluster.ingresses
    assert netlab_cli("get", "ingress", "--lab", cluster.name).stdout.splitlines()[1].split()[3] == "80"


def test_readme_commands(cafe):
    """Every command of the README's Ingress section runs (with --lab, in this lab)."""
    import shlex
    readme = (LABS.parent / "README.md").read_text()
    block = readme.split("## Ingress: layer 7")[1].split("```sh\n")[1].split("```")[0]
    lab = cafe.name
    pod = next(p.meta.name for p in cafe.pods.values() if p.meta.namespace == "ingress-nginx")
    lb = cafe.services["ingress-nginx/ingress-nginx-controller"].load_balancer_ips[0]
    outputs = []
    for line in block.splitlines():
        words = shlex.split(line.split("  #")[0].strip())
        assert words[:2] == ["sudo", "netlab"], line
        words = words[2:]
        if words[0] == "up":
            assert words == ["up", "labs/ingress"]                # the fixture brought it up so
            continue
        words = [w.replace("ingress-nginx-controller-x7k2q", pod).replace("/run/netlab/ingress/", f"/run/netlab/{lab}/")
                 .replace("198.51.100.1", lb) for w in words]
        at = words.index("--") if "--" in words else len(words)
        done = netlab_cli(*words[:at], "--lab", lab, *words[at:])
        outputs.append(done.stdout)
    text = "\n".join(outputs)
    assert "Hostname: coffee-" in text and "Hostname: tea-" in text
    assert "HTTP/1.1 308 Permanent Redirect" in text and "default backend - 404" in text
    assert "server_name cafe.example.net;" in text and "4 passed, 0 failed" in text
    # trace --ingress: leg 1 ends in nginx's pod, leg 2 goes from it to each tea pod; all confirmed.
    assert text.count("leg 2: from nginx to the backend") == 2 and "NOT confirmed" not in text
    assert f"delivered to pod ingress-nginx/{pod}" in text


NGINX_CONF = """daemon off;
master_process on;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    server { listen 127.0.0.1:8080; return 200 "up\\n"; }
}
"""


def test_a_reload_waits_for_an_nginx_still_starting(tmp_path):
    """nginx sets its signal handlers only once it has read its configuration; a SIGHUP
    before that kills it (exit 129), as the sync right after `up`'s first pods did now and
    then to the controller. reload() waits for the handler. The nginx runs in a namespace
    of its own, and is asked to reload the instant it has been started."""
    from netlab.runtime import ingress
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert nginx, "nginx is not installed (scripts/setup.sh installs it)"
    (tmp_path / "nginx.conf").write_text(NGINX_CONF % {"dir": tmp_path})
    ns = f"netlab-test{uuid.uuid4().hex[:8]}.nginx"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, nginx, "-c", str(tmp_path / "nginx.conf"),
                                 "-e", "stderr"], stderr=subprocess.PIPE)
        took = ingress.reload([proc.pid])
        assert proc.poll() is None, f"nginx died: exit {proc.returncode}"
        assert took is not None and ingress._children(proc.pid), "no workers after the reload"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
