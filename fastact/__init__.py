"""fastact: fused, numerically stable CPU kernels for the softmax family.

Every function takes NumPy arrays and a ``backend=`` ("auto", "c", "numba",
"numpy"); see SPEC.md / README.md for the contract.  Importing fastact loads
no backend: the native kernels are loaded (and Numba's compiled) on first use.
"""

from . import _api
from ._api import (  # noqa: F401  (listed in __all__ by _api.__all__)
    log_softmax,
    log_softmax_backward,
    logsumexp,
    softmax,
    softmax_backward,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_with_grad,
)
from ._api_elementwise import (
    gelu,
    gelu_backward,
    log_sigmoid,
    log_sigmoid_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    sigmoid_binary_cross_entropy,
    sigmoid_binary_cross_entropy_backward,
    sigmoid_binary_cross_entropy_with_grad,
    silu,
    silu_backward,
    softsign,
    softsign_backward,
    tanh,
    tanh_backward,
)
from ._config import (
    available_backends,
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    *_api.__all__,
    "sigmoid",
    "log_sigmoid",
    "sigmoid_backward",
    "log_sigmoid_backward",
    "sigmoid_binary_cross_entropy",
    "sigmoid_binary_cross_entropy_backward",
    "sigmoid_binary_cross_entropy_with_grad",
    "relu",
    "relu_backward",
    "tanh",
    "tanh_backward",
    "softsign",
    "softsign_backward",
    "gelu",
    "gelu_backward",
    "silu",
    "silu_backward",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
]


def __getattr__(name):
    # Optional namespaces, imported on first access so `import fastact` stays light.
    if name in ("special", "torch", "dask"):
        import importlib

        return importlib.import_module(f"fastact.{name}")
    raise AttributeError(f"module 'fastact' has no attribute {name!r}")
