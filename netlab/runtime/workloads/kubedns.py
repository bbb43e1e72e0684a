"""The kubedns container: netlab's DNS server for the cluster zone, on port 10053."""
from __future__ import annotations


def main(args: list[str]) -> int:
    import argparse
    from ..kubedns import main as serve
    parser = argparse.ArgumentParser(prog="kubedns")
    parser.add_argument("--domain", default="cluster.local")
    parser.add_argument("--records", required=True)
    opts, _ = parser.parse_known_args(args)
    # As kube-dns does, on every address: dnsmasq asks it on localhost, kubelet probes the
    # health port from the node.
    # Its /healthz checks itself and the dnsmasq cache in front of it, as exechealthz did.
    # CNAME targets outside the zone go to the pod's resolver (dnsPolicy Default: the node's).
    return serve(["--listen", "0.0.0.0", "--port", "10053", "--records", opts.records,
                  "--health-port", "8081", "--check-cache", "127.0.0.1:53", "--resolv-conf", "/etc/resolv.conf"])
