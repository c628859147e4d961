"""Timing one call: ``measure`` (batched samples, median per call, bounded time)."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass


@dataclass
class Timing:
    median_s: float
    min_s: float
    repeats: int
    number: int
    first_call_s: float


#: A sample batches calls until it lasts at least this long (timer resolution).
_MIN_SAMPLE_S = 2e-4


def measure(fn, min_time=0.25, min_repeats=5, max_time=2.0, max_repeats=1000):
    """Median seconds per call of ``fn()``: a first call (kept apart; if it was short,
    a second to size the batches), then samples until both ``min_time`` seconds and
    ``min_repeats`` samples are reached — or ``max_time`` seconds (at least one sample),
    so that a slow call does not hold up the run."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    est = first
    if est < _MIN_SAMPLE_S:  # short: time a second call to size the batches
        t0 = time.perf_counter()
        fn()
        est = time.perf_counter() - t0
    number = 1 if est >= _MIN_SAMPLE_S else min(10000, int(_MIN_SAMPLE_S / max(est, 1e-9)) + 1)
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - t0) / number)
            n, elapsed = len(samples), time.perf_counter() - start
            if (n >= min_repeats and elapsed >= min_time) or elapsed >= max_time \
                    or n >= max_repeats:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(statistics.median(samples), min(samples), len(samples), number, first)
