"""Shared by the benchmarks: time a step in a fresh process and report its median/min time and peak memory."""

import multiprocessing as mp
import resource
import statistics
import time

import psutil


def measure_steps(step, repeats: int, warmup: int = 2) -> dict:
    """Run `step` `warmup` times, then time `repeats` runs; peak memory is the RSS high-water mark above the RSS
    before the first step (model and inputs already loaded)."""
    base_rss = psutil.Process().memory_info().rss
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_mem_mb": (peak - base_rss) / 2**20}


def run_isolated(target, *args):
    """`target(*args, queue)` in a spawned process (its own peak memory); returns what it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result
