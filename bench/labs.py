"""Lab text shared by the benchmarks: N netexec pods of one RC over 3 nodes, behind a Service."""
from __future__ import annotations

_TEMPLATE = """apiVersion: netlab/v1
kind: Lab
metadata: {{name: bench}}
spec: {{nodes: {nodes}, dns: {dns}}}
---
apiVersion: v1
kind: ReplicationController
metadata: {{name: web}}
spec:
  replicas: {pods}
  selector: {{app: web}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: example/web, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def replicated_pods(pods: int, nodes: int = 3, dns: bool = False) -> str:
    """lab.yaml text for `pods` pods spread over `nodes` nodes (no kube-dns unless asked)."""
    return _TEMPLATE.format(pods=pods, nodes=nodes, dns=str(dns).lower())
