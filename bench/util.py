"""Timing helpers shared by the benchmarks: median wall and CPU milliseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    runs: int
    wall_ms: float
    cpu_ms: float

    def __str__(self) -> str:
        return f"{self.wall_ms:9.2f} ms wall {self.cpu_ms:9.2f} ms CPU (median of {self.runs})"


def measure(fn: Callable[[], object], runs: int = 20, warmup: int = 1) -> Stats:
    """Run ``fn`` ``warmup`` times untimed, then ``runs`` times; return the medians."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpus.append((time.process_time() - c0) * 1e3)
        walls.append((time.perf_counter() - w0) * 1e3)
    return Stats(runs, statistics.median(walls), statistics.median(cpus))
