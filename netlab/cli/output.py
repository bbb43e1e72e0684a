"""Rendering for the CLI: kubectl-style tables, JSON and YAML."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Sequence

OUTPUT_FORMATS = ("table", "wide", "json", "yaml", "name")


def age(since: float) -> str:
    """kubectl's short durations: 45s, 3m12s, 5h, 2d."""
    if not since:
        return "<unknown>"
    secs = max(0, int(time.time() - since))
    if secs < 120:
        return f"{secs}s"
    if secs < 600:
        return f"{secs // 60}m{secs % 60}s"
    if secs < 3 * 3600:
        return f"{secs // 60}m"
    if secs < 48 * 3600:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns, exactly like kubectl (3 spaces between columns)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def emit(data: Any, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    elif fmt == "yaml":
        import yaml
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    else:
        raise ValueError(fmt)


def as_list(items: list) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items}
