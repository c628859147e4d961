"""The run: the first calls (compile, load, check against the NumPy reference),
then every measurement, and the derived numbers (``derive``).

Derived numbers (per record, same op/shape/dtype/threads):
``speedup_vs_numpy = t(NumPy reference, same mode) / t``;
``speedup_vs_best_peer = t(best peer) / t``, the best peer being the fastest
of SciPy/PyTorch/JAX called in the same mode if it offers it, else in its
``alloc`` mode (the fastest way it can be called);
``copy_pct = t(copy) / t * 100`` (% of the copy bandwidth reached; above 100
for ops that write little, logsumexp and the losses, since a copy also writes).
"""

from __future__ import annotations

import gc
import time

import numpy as np

from .cases import MODES, OPS, PEERS, Inputs, fmt_shape, np_dtype, warmup_shapes
from .config import QUICK_TEXT
from .machine import backend_info, machine_info, peer_info, versions
from .schema import SCHEMA_ID
from .timing import measure


def _copy_call(inp):
    src = inp.x
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def _label(impl, backend):
    return backend if impl == "fastact" else impl


def _impls(cfg, peers):
    """``(impl, backend_or_None, peer_or_None)`` in measurement order: fastact
    backends (the NumPy reference last), then the peers."""
    out = [("fastact", b, None) for b in cfg.backends]
    out += [(name, None, peers[name]) for name in cfg.peers if peers[name].available]
    return out


def _modes(op, impl, wanted=MODES):
    """The modes to time ``impl`` in: those of ``wanted`` it offers, else the one it has."""
    if impl == "fastact":
        have = op.modes
    else:
        spec = op.peers.get(impl)
        have = spec.modes if spec is not None else ()
    return tuple(m for m in have if m in wanted) or have[:1]


def _calls(cfg, impls):
    """``(opname, op, impl, backend, peer, mode)`` for each call the run makes on one
    input: every op of ``cfg``, by every implementation, in each mode it is timed in."""
    for opname in cfg.ops:
        op = OPS[opname]
        for impl, b, p in impls:
            for mode in _modes(op, impl, cfg.modes):
                yield opname, op, impl, b, p, mode


def _make_call(op, impl, backend, peer, inputs, mode):
    if impl == "fastact":
        return op.fastact_call(inputs, backend, mode)
    return op.peer_call(impl, peer, inputs, mode)


def _to_numpy(r):
    if isinstance(r, tuple):
        return tuple(_to_numpy(v) for v in r)
    if hasattr(r, "detach"):
        r = r.detach()
        if r.dtype.is_floating_point and r.element_size() == 2:  # no .numpy() for bfloat16
            r = r.float()
        r = r.numpy()
    return np.asarray(r, dtype=np.float64)


def _agrees(a, b, dtype):
    a, b = _to_numpy(a), _to_numpy(b)
    if isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)):
            return False
        return all(_agrees(u, v, dtype) for u, v in zip(a, b))
    dt = np_dtype(dtype)
    # half dtypes: results rounded to 11 (float16) / 8 (bfloat16) bits, by different
    # routes (torch's own kernels, the reference in float32): a few units of the last bit
    tol = {4: 1e-4, 8: 1e-9}.get(dt.itemsize, 4e-3 if dt == np.float16 else 3e-2)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True))


def plan(cfg, peers):
    """Everything the run will time, for the progress bar: a list of task labels."""
    impls = _impls(cfg, peers)
    tasks = []
    for dt in cfg.dtypes:
        for wshape in warmup_shapes(cfg.shapes):
            for opname, op, impl, b, p, mode in _calls(cfg, impls):
                tasks.append(("first", dt, wshape, opname, impl, b, mode))
    for t in cfg.threads:
        for dt in cfg.dtypes:
            for shape in cfg.shapes:
                tasks.append(("copy", t, dt, shape))
                for opname, op, impl, b, p, mode in _calls(cfg, impls):
                    tasks.append(("time", t, dt, shape, opname, impl, b, mode))
    return tasks


def run_bench(cfg, peers, progress=None):
    """Run the benchmark; returns the JSON-ready result (see the package docstring).

    ``progress(description)`` is called before each task of ``plan(cfg, peers)``.
    """
    import fastact

    step = progress or (lambda desc: None)
    impls = _impls(cfg, peers)
    first_calls, records, skipped = [], [], []
    broken = set()  # (label, op): failed once, not tried again
    t_start = time.perf_counter()
    old_threads = fastact.get_num_threads()

    def skip(label, opname, err):
        broken.add((label, opname))
        first_line = (str(err).strip().splitlines() or [""])[0]
        skipped.append({"label": label, "op": opname,
                        "reason": f"{type(err).__name__}: {first_line}"})

    def each_call(inputs, describe, work):
        """``work(call, opname)`` for each call of the run on ``inputs`` (the progress
        step ``describe(opname, label, mode)`` first), yielding ``(opname, impl, backend,
        label, mode, work's result)``; an op that fails once for an implementation is
        skipped for it from then on."""
        for opname, op, impl, b, p, mode in _calls(cfg, impls):
            label = _label(impl, b)
            step(describe(opname, label, mode))
            if (label, opname) in broken:
                continue
            try:
                got = work(_make_call(op, impl, b, p, inputs, mode), opname)
            except Exception as e:
                skip(label, opname, e)
                continue
            yield opname, impl, b, label, mode, got

    def timed(fn, opname):
        return measure(fn, cfg.min_time, cfg.min_repeats, cfg.max_time)

    try:
        # First calls: compile / load / trace, on small inputs, with the most threads asked
        # for (so the multi-threaded variants compile too); checked against the reference.
        fastact.set_num_threads(max(cfg.threads))
        for p in peers.values():
            if p.available:
                p.set_threads(max(cfg.threads))
        for dt in cfg.dtypes:
            for wshape in warmup_shapes(cfg.shapes):
                small = Inputs(wshape, dt, cfg.seed)
                refs = {o: OPS[o].fastact_call(small, "numpy", "alloc")() for o in cfg.ops}

                def first_call(fn, opname):
                    t0 = time.perf_counter()
                    r = fn()
                    sec = time.perf_counter() - t0
                    return sec, _agrees(r, refs[opname], dt)

                def first_step(opname, label, mode):
                    return f"first call {fmt_shape(wshape)} {label} {opname} [{mode}]"

                for opname, impl, b, label, mode, (sec, ok) in each_call(small, first_step,
                                                                         first_call):
                    first_calls.append({"impl": impl, "backend": b, "label": label,
                                        "op": opname, "dtype": dt, "mode": mode,
                                        "shape": list(wshape), "seconds": sec,
                                        "agrees": ok})

        for t in cfg.threads:
            fastact.set_num_threads(t)
            for p in peers.values():
                if p.available:
                    p.set_threads(t)
            for dt in cfg.dtypes:
                for shape in cfg.shapes:
                    inputs = Inputs(shape, dt, cfg.seed)
                    step(f"copy {fmt_shape(shape)} {dt}")
                    tm = measure(_copy_call(inputs), cfg.min_time, cfg.min_repeats,
                                 cfg.max_time)
                    records.append(_record("copy", shape, dt, t, "copy", None, "alloc",
                                           tm, inputs.nbytes))

                    def timing_step(opname, label, mode):
                        return f"{opname} {fmt_shape(shape)} {label} [{mode}]"

                    for opname, impl, b, label, mode, tm in each_call(inputs, timing_step,
                                                                      timed):
                        records.append(_record(opname, shape, dt, t, impl, b, mode,
                                               tm, inputs.nbytes))
                    del inputs
                    gc.collect()
    finally:
        fastact.set_num_threads(old_threads)
        for p in peers.values():
            if p.available:
                p.set_threads(None)

    derive(records)
    notes = []
    if cfg.quick:
        notes.append(QUICK_TEXT)
    for fc in first_calls:
        if not fc["agrees"]:
            notes.append(f"{fc['label']} {fc['op']} [{fc['mode']}] {fc['dtype']}: result differs "
                         f"from the NumPy reference on the first-call input")
    if "jax" in peers and peers["jax"].available and set(cfg.threads) != {1}:
        notes.append("JAX runs on its own thread pool (all cores); --threads does not change it")
    return {
        "schema": SCHEMA_ID,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": cfg.command,
        "elapsed_s": time.perf_counter() - t_start,
        "machine": machine_info(),
        "versions": versions(),
        "backends": backend_info(),
        "peers": {name: peer_info(p) for name, p in peers.items()},
        "settings": {
            "ops": list(cfg.ops), "shapes": [list(s) for s in cfg.shapes],
            "dtypes": list(cfg.dtypes), "threads": list(cfg.threads),
            "backends": list(cfg.backends),
            "peers": [n for n in cfg.peers if peers[n].available],
            "quick": cfg.quick, "modes": list(cfg.modes), "min_time_s": cfg.min_time, "min_repeats": cfg.min_repeats,
            "max_time_s": cfg.max_time, "seed": cfg.seed,
        },
        "first_calls": first_calls,
        "records": records,
        "skipped": skipped,
        "notes": notes,
    }


def _record(op, shape, dt, threads, impl, backend, mode, tm, nbytes):
    return {
        "op": op, "shape": list(shape), "dtype": dt, "threads": threads,
        "impl": impl, "backend": backend, "label": _label(impl, backend), "mode": mode,
        "median_s": tm.median_s, "min_s": tm.min_s, "repeats": tm.repeats,
        "number": tm.number, "first_call_s": tm.first_call_s, "bytes": nbytes,
        "copy_s": None, "copy_pct": None, "speedup_vs_numpy": None,
        "speedup_vs_best_peer": None, "best_peer": None,
    }


def derive(records):
    """Fill in copy_pct and the speed-ups (see the module docstring)."""
    by_case = {}
    for r in records:
        by_case.setdefault((tuple(r["shape"]), r["dtype"], r["threads"]), []).append(r)
    for rs in by_case.values():
        copy = next((r["median_s"] for r in rs if r["op"] == "copy"), None)
        ops = {}
        for r in rs:
            if r["op"] != "copy":
                ops.setdefault(r["op"], []).append(r)
        for op_rs in ops.values():
            times = {(r["label"], r["mode"]): r["median_s"] for r in op_rs}
            peer_labels = {r["label"] for r in op_rs if r["impl"] in PEERS}

            def same_mode(label, mode):
                """``label``'s time in ``mode``, else in the mode it was timed in."""
                if (label, mode) in times:
                    return times[(label, mode)]
                other = [times[(label, m)] for m in MODES if (label, m) in times]
                return min(other) if other else None

            def best_peer(mode):
                cands = [(same_mode(lab, mode), lab) for lab in peer_labels]
                cands = [c for c in cands if c[0] is not None]
                return min(cands) if cands else None

            for r in op_rs:
                t = r["median_s"]
                if copy is not None:
                    r["copy_s"] = copy
                    r["copy_pct"] = copy / t * 100.0
                ref = same_mode("numpy", r["mode"])
                if ref is not None:
                    r["speedup_vs_numpy"] = ref / t
                bp = best_peer(r["mode"])
                if bp is not None:
                    r["speedup_vs_best_peer"] = bp[0] / t
                    r["best_peer"] = bp[1]
