"""The ``fastact`` command: ``bench`` (the main job), ``info``, ``experiment``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastact", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="versions, backends, SIMD level and threads")

    pb = sub.add_parser("bench", help="time every kernel, backend and installed peer")
    try:
        from . import bench
    except ImportError:  # pragma: no cover - fastact.bench ships with fastact
        bench = None
    if bench is not None:
        bench.add_arguments(pb)

    pe = sub.add_parser("experiment", help="run an experiment (softmax-hidden, sigmoid-vs-softmax)")
    pe.add_argument("name")
    pe.add_argument("rest", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    if args.command == "info":
        from ._info import print_info

        print_info()
        return 0
    if args.command == "bench":
        if bench is None:
            parser.error("the bench module is missing from this installation")
        return bench.run(args)
    if args.command == "experiment":
        try:
            from . import experiments
        except ImportError:
            parser.error("experiments are not available in this version")
        return experiments.main([args.name] + args.rest)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
