"""The kubedns container: netlab's DNS server for the cluster zone, on 127.0.0.1:10053."""
from __future__ import annotations


def main(args: list[str]) -> int:
    import argparse
    from ..kubedns import main as serve
    parser = argparse.ArgumentParser(prog="kubedns")
    parser.add_argument("--domain", default="cluster.local")
    parser.add_argument("--records", required=True)
    opts, _ = parser.parse_known_args(args)
    # Only dnsmasq, in the same pod, talks to kubedns: it listens on localhost alone.
    # Its health port answers kubelet's readiness probe, which comes from the node.
    return serve(["--listen", "127.0.0.1", "--port", "10053", "--records", opts.records,
                  "--health-port", "8081", "--health-listen", "0.0.0.0"])
