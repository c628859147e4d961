"""The ``fastact bench`` command: its options (``add_arguments``) and ``run``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cases import OPS, SHAPES, fmt_shape
from .config import QUICK, QUICK_TEXT, config_from_args
from .peers import load_peer
from .render import plot, render_markdown, render_rich
from .runner import plan, run_bench
from .schema import SCHEMA, SCHEMA_ID


def add_arguments(p):
    """The options of ``fastact bench`` (``p``: an argparse (sub)parser)."""
    p.description = ("Time every fastact op, backend and installed peer (NumPy reference, "
                     "SciPy, PyTorch, JAX) on standard shapes, beside a memory copy of the "
                     "same bytes; print a table of times and speed-ups.")
    p.add_argument("--ops", default="all",
                   help="comma-separated ops (default: all): " + ", ".join(OPS))
    p.add_argument("--backends", default="all",
                   help="fastact backends, comma-separated (default: all available; the "
                        "NumPy reference is always timed, as the baseline)")
    p.add_argument("--peers", default="all",
                   help="peers to compare with: scipy,torch,jax, 'all' (the installed ones, "
                        "default) or 'none'")
    p.add_argument("--shapes", default=None,
                   help="ROWSxCLASSES list, e.g. '1024x50257,standard' ('standard' = "
                        + ", ".join(fmt_shape(s) for s in SHAPES) + "; the default; --quick: "
                        + ", ".join(fmt_shape(s) for s in QUICK["shapes"]) + ")")
    p.add_argument("--dtype", default="float32",
                   help="float32 (default), float64, float16, bfloat16 (ml_dtypes) or a "
                        "list such as 'float32,float16'; half dtypes are computed in float32 "
                        "and every peer gets tensors of the same dtype")
    p.add_argument("--threads", default=None,
                   help="thread counts, e.g. '1,2' (default: fastact's, all cores)")
    p.add_argument("--quick", action="store_true",
                   help="fewer samples per measurement: the whole run in well under a minute")
    p.add_argument("--modes", default=None,
                   help="out (result into a preallocated array), alloc (the plain call), or "
                        "'out,alloc' (default; --quick: out)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of sampling per measurement (default 0.25; --quick 0.02)")
    p.add_argument("--repeats", type=int, default=None,
                   help="minimum samples per measurement (default 5; --quick 3)")
    p.add_argument("--json", metavar="FILE", help="write every measurement as JSON "
                   "(schema: fastact bench --schema)")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG of the speed-ups (matplotlib)")
    p.add_argument("--markdown", metavar="FILE", help="write the table as markdown")
    p.add_argument("--schema", action="store_true", help="print the JSON schema and exit")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: show (and --plot / --markdown) a saved --json run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)


def run(args):
    """``fastact bench``: returns the exit code."""
    if args.schema:
        print(json.dumps(SCHEMA, indent=2))
        return 0
    if args.from_json:
        return _from_json(args)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"fastact bench: error: {e}", file=sys.stderr)
        return 2
    cfg.command = _reconstruct_command(args)
    try:
        from rich.console import Console
    except ImportError:
        Console = None
        print("fastact bench: rich is not installed (pip install 'fastact[bench]'); "
              "plain output", file=sys.stderr)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastact bench: error: --plot needs matplotlib (pip install "
                  "'fastact[bench]')", file=sys.stderr)
            return 2

    err = Console(stderr=True) if Console else None
    out = None
    if Console:
        out = Console() if sys.stdout.isatty() else Console(width=160)
    if err:
        with err.status("loading peers ..."):
            peers = {n: load_peer(n, cfg.threads, cfg.dtypes) for n in cfg.peers}
    else:
        peers = {n: load_peer(n, cfg.threads, cfg.dtypes) for n in cfg.peers}
    loaded = [n for n, p in peers.items() if p.available]
    missing = [f"{n} ({p.reason})" for n, p in peers.items() if not p.available]
    msg = (f"backends: {', '.join(cfg.backends)}; peers: {', '.join(loaded) or 'none'}"
           + (f"; not installed: {', '.join(n for n, p in peers.items() if not p.available)}"
              if missing else "")
           + f"; threads {','.join(map(str, cfg.threads))}; {','.join(cfg.dtypes)}")
    print(msg, file=sys.stderr)
    if cfg.quick:
        print(QUICK_TEXT, file=sys.stderr)

    tasks = plan(cfg, peers)
    show_progress = err is not None and err.is_terminal and not args.no_progress
    if show_progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        with Progress(TextColumn("[progress.description]{task.description:<48}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as prog:
            tid = prog.add_task("starting", total=len(tasks))
            state = {"n": 0}

            def step(desc):
                if state["n"]:
                    prog.advance(tid)
                state["n"] += 1
                prog.update(tid, description=desc)

            try:
                result = run_bench(cfg, peers, step)
            except KeyboardInterrupt:
                prog.stop()
                print("fastact bench: interrupted", file=sys.stderr)
                return 130
            prog.advance(tid)
    else:
        try:
            result = run_bench(cfg, peers)
        except KeyboardInterrupt:
            print("fastact bench: interrupted", file=sys.stderr)
            return 130

    if out is not None:
        render_rich(result, out)
    else:
        print(render_markdown(result))
    print(f"{len(result['records'])} measurements in {result['elapsed_s']:.1f} s",
          file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(result))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.plot:
        try:
            plot(result, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
        except ValueError as e:
            print(f"fastact bench: {e}", file=sys.stderr)
    return 0


def _from_json(args):
    """Render a saved run: the same table, markdown and plot, no measurement."""
    try:
        with open(args.from_json) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        print(f"fastact bench: error: cannot read {args.from_json}: {e}", file=sys.stderr)
        return 2
    if not isinstance(result, dict) or result.get("schema") != SCHEMA_ID:
        print(f"fastact bench: error: {args.from_json} is not a {SCHEMA_ID} file",
              file=sys.stderr)
        return 2
    try:
        from rich.console import Console
    except ImportError:
        print(render_markdown(result))
    else:
        render_rich(result, Console() if sys.stdout.isatty() else Console(width=160))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(result))
    if args.plot:
        plot(result, args.plot)
    return 0


def _reconstruct_command(args):
    """The command line, as typed when run from a shell; rebuilt from ``args`` otherwise."""
    argv = sys.argv[1:]
    if "bench" in argv and os.path.basename(sys.argv[0]) in ("fastact", "__main__.py"):
        return "fastact " + " ".join(argv[argv.index("bench"):])
    parts = ["fastact bench"]
    for name in ("ops", "backends", "peers", "shapes", "dtype", "threads"):
        v = getattr(args, name)
        default = {"ops": "all", "backends": "all", "peers": "all", "shapes": None,
                   "dtype": "float32", "threads": None}[name]
        if v != default:
            parts.append(f"--{name} {v}")
    if args.quick:
        parts.append("--quick")
    if args.modes is not None:
        parts.append(f"--modes {args.modes}")
    return " ".join(parts)
