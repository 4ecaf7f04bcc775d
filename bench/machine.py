"""Where the numbers came from: printed above every table."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def describe(extra: dict[str, str], load_at_start: str | None = None) -> list[str]:
    """The machine and `extra` facts; `load_at_start` when the lines are written after the run began."""
    lines = [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: nproc={os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}",
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    lines.append(f"load average at start (1/5/15 min): {load_at_start or load_average()}")
    return lines
