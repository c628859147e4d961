"""What a run is asked to do: ``Config``, what ``--quick`` changes, and the
``Config`` of the command's options (``config_from_args``)."""

from __future__ import annotations

from dataclasses import dataclass

from .cases import DTYPES, MODES, OPS, PEERS, SHAPES, available_ops, parse_shapes


@dataclass
class Config:
    """What a run times and for how long: the input of ``runner.run_bench``."""

    ops: list
    shapes: list
    dtypes: list
    threads: list
    backends: list
    peers: list
    quick: bool = False
    modes: tuple = MODES
    min_time: float = 0.25
    min_repeats: int = 5
    max_time: float = 2.0
    seed: int = 0
    command: str = "fastact bench"


#: What ``--quick`` changes (printed with the results).
QUICK = dict(min_time=0.02, min_repeats=3, max_time=0.1, modes=("out",),
             shapes=((65536, 10), (4096, 1000), (64, 128256)))
QUICK_TEXT = ("--quick: every op, backend and peer, but three of the standard shapes "
              "(unless --shapes), only the out= calls (the 'alloc' column stays empty where "
              "out= exists), and each measurement stops after 3 samples and ~0.02 s, or 0.1 s "
              "(default: the eight standard shapes, both modes, 5 samples and ~0.25 s, or 2 s)")


def _csv(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def config_from_args(args):
    """The ``Config`` of parsed ``fastact bench`` options; ``ValueError`` if one is wrong."""
    import fastact

    avail_ops = available_ops()
    ops = avail_ops if args.ops == "all" else _csv(args.ops)
    for o in ops:
        if o not in OPS:
            raise ValueError(f"unknown op {o!r}; expected some of {', '.join(OPS)}")
        if o not in avail_ops:
            raise ValueError(f"op {o!r} needs fastact.{OPS[o].func}, which this version lacks")
    avail = fastact.available_backends()
    if args.backends == "all":
        backends = list(avail)
    else:
        backends = _csv(args.backends)
        from .. import _backends

        for b in backends:
            if b not in _backends.NAMES:
                raise ValueError(f"unknown backend {b!r}; expected some of "
                                 f"{', '.join(_backends.NAMES)}")
            if b not in avail:
                raise ValueError(f"backend {b!r} is not available: "
                                 f"{_backends.why_unavailable(b)}")
    if "numpy" not in backends:
        backends.append("numpy")  # the baseline of every speed-up
    backends = sorted(dict.fromkeys(backends), key=("c", "numba", "numpy").index)
    if args.peers == "all":
        peers = list(PEERS)
    elif args.peers == "none":
        peers = []
    else:
        peers = _csv(args.peers)
        for p in peers:
            if p not in PEERS:
                raise ValueError(f"unknown peer {p!r}; expected some of {', '.join(PEERS)}")
    dtypes = []
    for d in _csv(args.dtype):
        if d not in DTYPES:
            raise ValueError(f"--dtype must be some of {', '.join(DTYPES)}, got {d!r}")
        if d == "bfloat16":
            try:
                import ml_dtypes  # noqa: F401
            except ImportError:
                raise ValueError("--dtype bfloat16 needs the ml_dtypes package") from None
        dtypes.append(d)
    if args.threads is None:
        threads = [fastact.get_num_threads()]
    else:
        try:
            threads = [int(t) for t in _csv(args.threads)]
        except ValueError:
            raise ValueError(f"--threads must be integers, got {args.threads!r}") from None
        if not threads or min(threads) < 1:
            raise ValueError(f"--threads must be positive integers, got {args.threads!r}")
    if args.shapes is not None:
        shapes = parse_shapes(args.shapes)
    else:
        shapes = list(QUICK["shapes"] if args.quick else SHAPES)
    cfg = Config(ops=ops, shapes=shapes, dtypes=dtypes or ["float32"],
                 threads=threads, backends=backends, peers=peers, quick=args.quick,
                 seed=args.seed)
    if args.quick:
        cfg.min_time, cfg.min_repeats = QUICK["min_time"], QUICK["min_repeats"]
        cfg.max_time = QUICK["max_time"]
        cfg.modes = QUICK["modes"]
    if args.modes is not None:
        modes = _csv(args.modes)
        for m in modes:
            if m not in MODES:
                raise ValueError(f"--modes must be out and/or alloc, got {m!r}")
        cfg.modes = tuple(m for m in MODES if m in modes)
    if args.min_time is not None:
        cfg.min_time = max(0.0, args.min_time)
    if args.repeats is not None:
        cfg.min_repeats = max(1, args.repeats)
    return cfg
