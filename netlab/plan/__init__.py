"""Desired state per namespace, computed from the model: devices, routes, iptables text. Pure."""
