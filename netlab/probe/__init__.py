"""Packet and socket probes run inside lab namespaces, and the verify catalog."""
