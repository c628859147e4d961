"""Out-of-core benchmark: fastact.dask's logsumexp and cross-entropy over logits
larger than this machine's memory, generated lazily block by block.

    python benchmarks/dask_out_of_core.py                       # 1M x 8192 float32 = 32 GiB
    python benchmarks/dask_out_of_core.py --rows 262144 --classes 32000
    python benchmarks/dask_out_of_core.py --smoke               # seconds; checks the results

The logits are generated block by block: by default each block's rows are
drawn, with a generator seeded by the block's place, from a per-process pool of
``--pool-rows`` N(0, scale) rows (a gather: cheap next to the kernels), or with
``--generator normal`` by ``dask.array.random`` (then random-number generation,
~0.25 GB/s per core, dominates).  Each block exists only while a task works on
it, so the array is never held anywhere.  The class axis is split into chunks
of ``--chunk-classes`` (the per-chunk partials are merged exactly).

Reported per operation: wall time, throughput (GB/s of logits, rows/s) and
peak resident memory of this process and its children (the workers, with
``--scheduler distributed``), sampled every 0.1 s.  A ``max`` over the same
lazy array is timed first: the cost of generating the data, which every
operation pays too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import types

import numpy as np


class PeakRSS:
    """Peak of the summed RSS of this process and its descendants, sampled."""

    def __init__(self, interval=0.1):
        import psutil

        self.psutil = psutil
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self):
        total = 0
        for p in [self.proc] + self.proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _pools():
    """The per-process pool cache.  Kept in ``sys.modules``, not in a global of this
    script: run as ``__main__``, its functions reach distributed workers pickled by
    value, each task with fresh globals (a global cache would never hit, and the
    workers' cache of deserialised functions would keep a pool per task alive)."""
    mod = sys.modules.get("_fastact_dask_bench_pools")
    if mod is None:
        mod = sys.modules["_fastact_dask_bench_pools"] = types.ModuleType(
            "_fastact_dask_bench_pools")
        mod.pools = {}
    return mod.pools


def pooled_block(seed, scale, pool_rows, block_info=None):
    """A block of logits: rows drawn (by a generator seeded with the block's place)
    from a per-process pool of ``pool_rows`` N(0, scale) rows.  Costs one gather,
    so the benchmark measures fastact.dask, not the random-number generator."""
    info = block_info[None]
    (r0, _), (c0, c1) = info["array-location"]
    n, k = info["chunk-shape"]
    key = (seed, c1 - c0, scale, pool_rows)
    pools = _pools()
    pool = pools.get(key)
    if pool is None:
        g = np.random.default_rng([seed, c1 - c0])
        pool = pools[key] = (g.standard_normal((pool_rows, k), dtype=np.float32)
                              * np.float32(scale))
    rows = np.random.default_rng([seed, r0, c0]).integers(0, pool_rows, n)
    return pool[rows]


def build(args):
    import dask.array as da

    rng = da.random.default_rng(args.seed)
    chunks = (args.chunk_rows, args.chunk_classes)
    shape = (args.rows, args.classes)
    if args.generator == "normal":
        x = rng.standard_normal(shape, chunks=chunks, dtype=np.float32)
        if args.scale != 1.0:
            x = x * np.float32(args.scale)
    else:
        x = da.map_blocks(pooled_block, args.seed, args.scale, args.pool_rows,
                          chunks=da.core.normalize_chunks(chunks, shape),
                          dtype=np.float32, meta=np.empty((0, 0), np.float32))
    t = rng.integers(0, args.classes, size=args.rows, chunks=args.chunk_rows)
    return x, t


def operations(args, x, t):
    import fastact.dask as fd

    ops = {
        "generate (max)": lambda: x.max(),
        "logsumexp (sum over rows)": lambda: fd.logsumexp(x, axis=-1,
                                                          backend=args.backend).sum(),
        "cross-entropy (mean)": lambda: fd.softmax_cross_entropy(
            x, t, reduction="mean", label_smoothing=args.label_smoothing,
            backend=args.backend),
    }
    return {k: v for k, v in ops.items() if any(k.startswith(o) for o in args.ops)}


def run(args):
    import dask

    import fastact

    x, t = build(args)
    nbytes = x.nbytes
    client = cluster = None
    if args.scheduler == "distributed":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               memory_limit=args.memory_limit)
        client = Client(cluster)
        client.run(fastact.set_num_threads, 1)
        get = dict()
    else:
        fastact.set_num_threads(1)  # the scheduler's threads already fill the cores
        get = dict(scheduler=args.scheduler, num_workers=args.workers)
    results = []
    try:
        for name, make in operations(args, x, t).items():
            expr = make()
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                value = float(dask.compute(expr, **get)[0])
                wall = time.perf_counter() - t0
            results.append(dict(op=name, value=value, wall_s=wall, gb_per_s=nbytes / wall / 1e9,
                                rows_per_s=args.rows / wall, peak_rss_gib=mem.peak / 2**30))
            print(f"{name:28s} {wall:8.1f} s  {nbytes / wall / 1e9:6.2f} GB/s  "
                  f"{args.rows / wall:12,.0f} rows/s  peak RSS {mem.peak / 2**30:6.2f} GiB  "
                  f"value {value:.6g}", flush=True)
    finally:
        if client is not None:
            client.close()
            cluster.close()
    if args.smoke:
        check(args, x, t, results)
    return results


def check(args, x, t, results):
    """In smoke mode the array fits: compare with in-memory fastact."""
    import fastact

    xn, tn = x.compute(scheduler="sync"), t.compute(scheduler="sync")
    want = {
        "logsumexp": float(np.sum(fastact.logsumexp(xn, axis=-1, backend=args.backend),
                                  dtype=np.float64)),
        "cross-entropy": float(fastact.softmax_cross_entropy(
            xn, tn, label_smoothing=args.label_smoothing, backend=args.backend)),
        "generate": float(xn.max()),
    }
    for r in results:
        w = want[r["op"].split()[0]]
        assert abs(r["value"] - w) <= 1e-4 * max(1.0, abs(w)), (r["op"], r["value"], w)
    print("smoke check: results equal in-memory fastact", flush=True)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1 << 20)
    p.add_argument("--classes", type=int, default=8192)
    p.add_argument("--chunk-rows", type=int, default=8192)
    p.add_argument("--chunk-classes", type=int, default=2048)
    p.add_argument("--scale", type=float, default=4.0, help="logits = scale * N(0, 1)")
    p.add_argument("--generator", choices=("pool", "normal"), default="pool",
                   help="pool: rows gathered from a seeded pool of N(0, scale) rows (cheap); "
                        "normal: dask.array.random.standard_normal (generation-bound)")
    p.add_argument("--pool-rows", type=int, default=4096)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", choices=("threads", "sync", "distributed"),
                   default="threads")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="threads, or worker processes for --scheduler distributed")
    p.add_argument("--memory-limit", default="4GiB", help="per distributed worker")
    p.add_argument("--backend", default=None, help="fastact backend inside the blocks")
    p.add_argument("--ops", nargs="+", default=["generate", "logsumexp", "cross-entropy"])
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--smoke", action="store_true",
                   help="tiny size (seconds) and a check against in-memory fastact")
    args = p.parse_args(argv)
    if args.smoke:
        args.rows, args.classes, args.chunk_rows, args.chunk_classes = 3000, 700, 1024, 256
        args.pool_rows = 500
    return args


def main(argv=None):
    args = parse(argv)
    import dask

    import fastact

    gib = args.rows * args.classes * 4 / 2**30
    print(f"fastact.dask out-of-core: {args.rows:,} x {args.classes:,} float32 = {gib:.1f} GiB "
          f"in chunks of {args.chunk_rows:,} x {args.chunk_classes:,} "
          f"({args.chunk_rows * args.chunk_classes * 4 / 2**20:.0f} MiB), "
          f"generator {args.generator}, scheduler {args.scheduler} x {args.workers}; "
          f"fastact {fastact.__version__} "
          f"(backend {args.backend or fastact.get_backend()}), dask {dask.__version__}, "
          f"numpy {np.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores", flush=True)
    results = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
