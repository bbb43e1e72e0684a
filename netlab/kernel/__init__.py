"""Applies plans to the kernel (netlink, iptables-restore). The only layer needing CAP_NET_ADMIN."""
