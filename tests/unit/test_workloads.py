"""Built-in workloads: image mapping, netexec and the guestbook, on 127.0.0.1 only, no root."""
from __future__ import annotations

import http.client
import json
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab.runtime import workloads
from netlab.runtime.workloads import BUILTIN, guestbook, netexec, resp

LOCAL = "127.0.0.1"
TIMEOUT = 5.0
REPO = Path(workloads.__file__).resolve().parents[3]
REDIS = workloads.redis_server_path()


def http_get(port: int, path: str) -> tuple[int, str, tuple[str, int]]:
    """(status, body, client address) of one GET to 127.0.0.1:port."""
    conn = http.client.HTTPConnection(LOCAL, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        client = conn.sock.getsockname()
        response = conn.getresponse()
        return response.status, response.read().decode(), client
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)


# --- resolve() and describe() ---------------------------------------------------------------

GUESTBOOK_ENV = {"GET_HOSTS_FROM": "env", "REDIS_MASTER_SERVICE_HOST": "10.96.0.20",
                 "REDIS_SLAVE_SERVICE_HOST": "10.96.0.21"}


def test_real_command_runs_unchanged() -> None:
    assert workloads.resolve("kubeguide/redis-master", ["sleep"], ["3600"], [], {}) == ["sleep", "3600"]
    # Images without an entrypoint run their args as the command.
    assert workloads.resolve("busybox:1.36", [], ["sleep", "5"], [], {}) == ["sleep", "5"]


@pytest.mark.parametrize("image", ["kubeguide/guestbook-php-frontend", "gcr.io/google-samples/gb-frontend:v4"])
def test_frontend_images_run_the_guestbook(image: str) -> None:
    argv = workloads.resolve(image, [], [], [(80, "TCP", "")], GUESTBOOK_ENV)
    assert argv == [BUILTIN, "guestbook", "--port=80", "--master=10.96.0.20", "--slave=10.96.0.21"]
    argv = workloads.resolve(image, [], [], [(80, "TCP", "")], {})
    assert argv == [BUILTIN, "guestbook", "--port=80", "--master=redis-master", "--slave=redis-slave"]
    assert "guestbook" in workloads.describe(image)


@pytest.mark.parametrize("image", ["kubeguide/guestbook-redis-slave", "gcr.io/google_samples/gb-redisslave:v1"])
def test_redis_slave_images_replicate_from_the_master_service(image: str, monkeypatch) -> None:
    monkeypatch.setattr(workloads.images, "redis_server_path", lambda: "/usr/bin/redis-server")
    argv = workloads.resolve(image, [], [], [(6379, "TCP", "")], GUESTBOOK_ENV)
    assert argv[0] == "/usr/bin/redis-server"
    assert argv[argv.index("--replicaof"):][:3] == ["--replicaof", "10.96.0.20", "6379"]
    argv = workloads.resolve(image, [], [], [(6379, "TCP", "")], {"GET_HOSTS_FROM": "dns"})
    assert argv[argv.index("--replicaof"):][:3] == ["--replicaof", "redis-master", "6379"]
    assert workloads.describe(image) == "redis-server (real, replica)"


def test_redis_master_image(monkeypatch) -> None:
    monkeypatch.setattr(workloads.images, "redis_server_path", lambda: "/usr/bin/redis-server")
    argv = workloads.resolve("kubeguide/redis-master", [], [], [(6379, "TCP", "")], {})
    assert argv[:3] == ["/usr/bin/redis-server", "--port", "6379"]
    assert "--replicaof" not in argv and ["--save", ""] == argv[argv.index("--save"):][:2]
    # The redis image's entrypoint drops a leading "redis-server" from args.
    argv = workloads.resolve("redis:7", [], ["redis-server", "--maxmemory", "1mb"], [], {})
    assert argv[-2:] == ["--maxmemory", "1mb"] and argv.count("/usr/bin/redis-server") == 1


def test_redis_without_redis_server_falls_back_to_netexec(monkeypatch) -> None:
    monkeypatch.setattr(workloads.images, "redis_server_path", lambda: None)
    argv = workloads.resolve("kubeguide/redis-master", [], [], [(6379, "TCP", "")], {})
    assert argv == [BUILTIN, "netexec", "--http-port=6379"]
    assert "not installed" in workloads.describe("kubeguide/redis-master")


def test_other_images_run_netexec_on_declared_ports() -> None:
    ports = [(80, "TCP", "http"), (53, "udp", "dns"), (9, "SCTP", "")]
    argv = workloads.resolve("nginx:1.25", [], [], ports, {})
    assert argv == [BUILTIN, "netexec", "--http-port=80", "--udp-port=53"]
    assert workloads.resolve("example/app", [], [], [], {}) == [BUILTIN, "netexec"]
    assert workloads.resolve("registry.k8s.io/pause:3.9", [], [], [], {}) == [BUILTIN, "pause"]
    assert workloads.describe("nginx") == "netlab netexec test server"


def test_netexec_ports_default_like_agnhost() -> None:
    opts = netexec._parse([])
    assert (opts.http_port, opts.udp_port) == ([8080], [8081])
    opts = netexec._parse(["netexec", "--http-port=9000", "--udp-port=-1", "--unknown=1"])
    assert (opts.http_port, opts.udp_port) == ([9000], [])


def test_flags_are_read_as_go_reads_them() -> None:
    from netlab.runtime.workloads.serving import parse_flags
    spec = {"http-port": [], "address": "0.0.0.0", "port": 3000}
    opts = parse_flags(["netexec", "-http-port", "80", "--http-port=81", "--address", "10.0.0.1",
                        "--other", "5", "-port=7"], spec)
    assert (opts.http_port, opts.address, opts.port) == ([80, 81], "10.0.0.1", 7)
    assert parse_flags([], spec).http_port == [] and spec["http-port"] == []   # defaults untouched
    assert netexec._parse(["--udp-port", "-1", "--http-port", "9000"]).udp_port == []


@pytest.mark.parametrize("args", [["--port=x"], ["--port"], ["--http-port=80.5"]])
def test_a_bad_flag_stops_the_server_with_code_2(args, capfd) -> None:
    from netlab.runtime.workloads.serving import parse_flags
    with pytest.raises(SystemExit) as exc:
        parse_flags(args, {"http-port": [], "port": 3000})
    assert exc.value.code == 2
    assert args[0].split("=")[0] in capfd.readouterr().err     # the line names the flag


def test_importing_the_package_stays_cheap() -> None:
    code = ("import sys, netlab.runtime.workloads; "
            "print(sorted(m for m in ('scapy', 'http.server', 'dnslib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=TIMEOUT, check=True).stdout
    assert out.strip() == "[]"


# --- netexec ------------------------------------------------------------------------------------

@pytest.fixture
def netexec_server():
    group = netexec.serve(LOCAL, [0], [0])
    try:
        yield group
    finally:
        group.stop()


def test_netexec_http_endpoints(netexec_server) -> None:
    port = netexec_server.address("http")[1]
    assert http_get(port, "/hostname")[:2] == (200, socket.gethostname())
    status, body, client = http_get(port, "/clientip")
    assert (status, body) == (200, f"{client[0]}:{client[1]}")
    assert http_get(port, "/echo?msg=hello%20there")[:2] == (200, "hello there")
    assert http_get(port, "/echo?msg=nope&code=503")[:2] == (503, "nope")
    assert http_get(port, "/healthz")[:2] == (200, "ok")
    assert http_get(port, "/shell?cmd=id")[0] == 404


def test_netexec_health_can_be_failed_on_purpose(netexec_server) -> None:
    port = netexec_server.address("http")[1]
    assert http_get(port, "/sethealth?ok=false")[0] == 200
    assert http_get(port, "/healthz")[0] == 412
    assert http_get(port, "/sethealth?ok=true")[0] == 200
    assert http_get(port, "/healthz")[:2] == (200, "ok")


def test_netexec_udp(netexec_server) -> None:
    address = netexec_server.address("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((LOCAL, 0))
        for request, expected in [("hostname", socket.gethostname()), ("echo hi there", "hi there"),
                                  ("clientip", "%s:%d" % sock.getsockname()),
                                  ("anything", socket.gethostname())]:
            sock.sendto(request.encode(), address)
            assert sock.recvfrom(4096)[0].decode() == expected


def test_netexec_survives_bad_clients(netexec_server) -> None:
    port = netexec_server.address("http")[1]
    socket.create_connection((LOCAL, port), timeout=TIMEOUT).close()  # connect, say nothing
    with socket.create_connection((LOCAL, port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /hostname HTTP/1.1\r\n")  # half a request, then gone
    with socket.create_connection((LOCAL, port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x00\xffnot http\r\n\r\n")
        sock.recv(4096)
    assert http_get(port, "/hostname")[:2] == (200, socket.gethostname())


def test_netexec_process_exits_zero_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlab.runtime.workloads", "netexec",
         f"--address={LOCAL}", "--http-port=0", "--udp-port=0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ports = {}
        deadline = time.monotonic() + TIMEOUT
        while len(ports) < 2 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.1)[0]:
                line = proc.stdout.readline().decode()
                assert line, f"netexec exited: {proc.stderr.read().decode()}"
                if line.startswith("serving "):
                    _, proto, _, address = line.split()
                    ports[proto] = int(address.rsplit(":", 1)[1])
        assert set(ports) == {"http", "udp"}
        assert http_get(ports["http"], "/healthz")[:2] == (200, "ok")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
        assert b"GET /healthz" in proc.stdout.read()  # one log line per request
    finally:
        stop_process(proc)
        proc.stdout.close()
        proc.stderr.close()


# --- guestbook ----------------------------------------------------------------------------------

def start_redis(tmp_path: Path, request, *extra: str) -> int:
    """Start redis-server with resolve()'s flags, moved to a free 127.0.0.1 port; return the port."""
    image = "kubeguide/guestbook-redis-slave" if "--replicaof" in extra else "kubeguide/redis-master"
    port = free_port()
    argv = workloads.resolve(image, [], [], [(6379, "TCP", "")], {})
    argv += ["--port", str(port), "--bind", LOCAL, *extra]  # later options win in redis
    log = open(tmp_path / f"redis-{port}.log", "wb")
    request.addfinalizer(log.close)
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    request.addfinalizer(lambda: stop_process(proc))
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            if resp.call(LOCAL, port, "PING", timeout=0.5) == b"PONG":
                return port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
        time.sleep(0.05)


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
def test_guestbook_sets_on_master_and_gets_from_slave(tmp_path: Path, request) -> None:
    master = start_redis(tmp_path, request)
    slave = start_redis(tmp_path, request, "--replicaof", LOCAL, str(master))
    group = guestbook.serve(LOCAL, 0, guestbook.Backend("master", LOCAL, master),
                            guestbook.Backend("slave", LOCAL, slave))
    request.addfinalizer(group.stop)
    port = group.address("http")[1]

    status, body, _ = http_get(port, "/guestbook.php?cmd=set&key=messages&value=hello,world")
    assert (status, json.loads(body)) == (200, {"message": "Updated"})
    deadline = time.monotonic() + TIMEOUT  # replication is asynchronous
    while True:
        status, body, _ = http_get(port, "/guestbook.php?cmd=get&key=messages")
        if json.loads(body) == {"data": "hello,world"} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (status, json.loads(body)) == (200, {"data": "hello,world"})
    assert "Guestbook" in http_get(port, "/")[1]


def test_guestbook_reports_redis_errors_as_500() -> None:
    group = guestbook.serve(LOCAL, 0, guestbook.Backend("master", LOCAL, free_port()),
                            guestbook.Backend("slave", ""))
    try:
        port = group.address("http")[1]
        status, body, _ = http_get(port, "/guestbook.php?cmd=set&key=messages&value=x")
        assert status == 500 and "redis master" in json.loads(body)["error"] and "\n" not in body
        status, body, _ = http_get(port, "/guestbook.php?cmd=get&key=messages")
        assert status == 500 and "REDIS_SLAVE_SERVICE_HOST" in json.loads(body)["error"]
    finally:
        group.stop()
