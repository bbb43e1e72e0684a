"""Processes: pod holders, containers, built-in workloads and the per-lab agent."""
