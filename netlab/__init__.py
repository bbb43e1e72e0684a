"""netlab: a real Kubernetes network on one Linux machine, proven with packets."""

__version__ = "0.1.0"
