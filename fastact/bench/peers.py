"""The peer libraries (SciPy, PyTorch, JAX), imported for a run: ``load_peer``."""

from __future__ import annotations

import os
import sys

import numpy as np

from .cases import PEERS


class LoadedPeer:
    """A peer library, imported: ``available``, ``version`` or ``reason``."""

    def __init__(self, name):
        self.name = name
        self.available = False
        self.version = None
        self.reason = None
        self._jit = {}

    def resolve(self, dotted):
        obj = {"torch": self.torch}[dotted.split(".")[0]]
        for part in dotted.split(".")[1:]:
            obj = getattr(obj, part)
        return obj

    def jit(self, key, build):
        if key not in self._jit:
            self._jit[key] = self.jax.jit(build(self.jax))
        return self._jit[key]

    def set_threads(self, n):
        """Use ``n`` threads (``None``: back to what the library had at load)."""
        if self.name == "torch":
            self.torch.set_num_threads(self._threads0 if n is None else n)


def load_peer(name, threads=(), dtypes=()):
    """Import peer ``name``; never raises (the reason is kept instead)."""
    p = LoadedPeer(name)
    try:
        if name == "scipy":
            import scipy
            import scipy.special

            p.special = scipy.special
            p.version = scipy.__version__
        elif name == "torch":
            import torch
            import torch.nn.functional as F

            p.torch, p.F = torch, F
            p._threads0 = torch.get_num_threads()
            p.version = torch.__version__
        elif name == "jax":
            if "jax" not in sys.modules and set(threads) == {1}:
                # XLA's CPU thread pool is fixed when JAX starts: one thread if asked.
                os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                                   "intra_op_parallelism_threads=1")
            import jax

            if np.dtype(np.float64) in [np.dtype(d) for d in dtypes]:
                jax.config.update("jax_enable_x64", True)
            p.jax = jax
            p.version = jax.__version__
        else:
            raise ValueError(f"unknown peer {name!r}; expected one of {list(PEERS)}")
        p.available = True
    except ImportError as e:
        p.reason = f"not installed ({e})"
    except Exception as e:  # a broken install must not stop the benchmark
        p.reason = f"{type(e).__name__}: {e}"
    return p
