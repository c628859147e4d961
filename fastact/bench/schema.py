"""The JSON Schema of ``fastact bench --json`` (draft 2020-12; ``fastact bench
--schema`` prints it; ``docs/bench-schema.json`` is a copy of it)."""

from __future__ import annotations

from .cases import DTYPES, MODES, PEERS


SCHEMA_ID = "fastact-bench/1"

_NUM = {"type": "number"}
_POS = {"type": "number", "exclusiveMinimum": 0}
_STR = {"type": "string"}
_OPT_NUM = {"type": ["number", "null"]}
_OPT_STR = {"type": ["string", "null"]}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1},
          "minItems": 2, "maxItems": 2}
_DTYPE = {"enum": list(DTYPES)}
_MODE = {"enum": list(MODES)}
_AVAIL = {"type": "object", "required": ["available"],
          "properties": {"available": {"type": "boolean"}, "version": _STR, "reason": _STR}}


def _obj(props, required=None, extra=False):
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required,
            "additionalProperties": extra}


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fastact bench results",
    "description": (
        "Output of `fastact bench --json FILE`. Times are seconds per call (median of "
        "the samples). mode 'out': the result written into a preallocated array; "
        "'alloc': the plain call, allocating its result. speedup_vs_numpy = "
        "t(NumPy reference, same mode) / t; speedup_vs_best_peer = t(fastest peer, same "
        "mode if it has it, else alloc) / t; copy_pct = t(np.copyto of the op's (n, k) "
        "input) / t * 100."),
    "type": "object",
    "required": ["schema", "created", "command", "elapsed_s", "machine", "versions",
                 "backends", "peers", "settings", "first_calls", "records", "skipped", "notes"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "created": {"type": "string", "description": "ISO 8601 local time of the run"},
        "command": {"type": "string", "description": "the command line that made this file"},
        "elapsed_s": _NUM,
        "machine": _obj({
            "cpu": _STR,
            "cores": {"type": "integer", "minimum": 1,
                      "description": "CPUs this process may run on"},
            "arch": _STR, "platform": _STR, "python": _STR,
            "memory_bytes": {"type": ["integer", "null"]},
            "simd_level": {"type": "string",
                           "description": "widest vector extension the CPU reports"},
            "cpu_flags": {"type": "array", "items": _STR},
        }),
        "versions": {"type": "object", "required": ["fastact", "numpy"],
                     "additionalProperties": _OPT_STR,
                     "description": "installed version of each package, null if absent"},
        "backends": {"type": "object", "additionalProperties": _AVAIL,
                     "description": "fastact backend -> available (reason if not)"},
        "peers": {"type": "object", "additionalProperties": _AVAIL,
                  "description": "peer library -> available, version (reason if not)"},
        "settings": _obj({
            "ops": {"type": "array", "items": _STR, "minItems": 1},
            "shapes": {"type": "array", "items": _SHAPE, "minItems": 1},
            "dtypes": {"type": "array", "items": _DTYPE, "minItems": 1},
            "threads": {"type": "array", "items": {"type": "integer", "minimum": 1},
                        "minItems": 1},
            "backends": {"type": "array", "items": _STR, "minItems": 1},
            "peers": {"type": "array", "items": {"enum": list(PEERS)}},
            "quick": {"type": "boolean"},
            "modes": {"type": "array", "items": _MODE, "minItems": 1,
                      "description": "modes timed where an implementation offers them"},
            "min_time_s": _NUM,
            "min_repeats": {"type": "integer", "minimum": 1},
            "max_time_s": _NUM,
            "seed": {"type": "integer"},
        }),
        "first_calls": {
            "type": "array",
            "description": ("the first calls of each implementation per op, dtype and mode, "
                            "on an 8x16 input if the run has shapes under 65536 elements and "
                            "a 64x1024 one if it has larger shapes: Numba compilation "
                            "(serial and multi-threaded variants), library loading, JAX "
                            "tracing; excluded from the records' times"),
            "items": _obj({
                "impl": _STR, "backend": _OPT_STR, "label": _STR, "op": _STR,
                "dtype": _DTYPE, "mode": _MODE, "shape": _SHAPE, "seconds": _POS,
                "agrees": {"type": "boolean",
                           "description": "result equals the NumPy reference's"},
            }),
        },
        "records": {
            "type": "array",
            "description": "one record per measurement",
            "items": _obj({
                "op": {"type": "string", "description": "an op of the case table, or 'copy'"},
                "shape": _SHAPE, "dtype": _DTYPE,
                "threads": {"type": "integer", "minimum": 1},
                "impl": {"enum": ["fastact", "copy"] + list(PEERS)},
                "backend": {"type": ["string", "null"],
                            "description": "fastact backend (numpy = the reference)"},
                "label": {"type": "string", "description": "backend name, or peer name"},
                "mode": _MODE,
                "median_s": _POS, "min_s": _POS,
                "repeats": {"type": "integer", "minimum": 1},
                "number": {"type": "integer", "minimum": 1,
                           "description": "calls per timed sample"},
                "first_call_s": _POS,
                "bytes": {"type": "integer", "minimum": 0,
                          "description": "bytes of the op's main (n, k) input"},
                "copy_s": _OPT_NUM, "copy_pct": _OPT_NUM,
                "speedup_vs_numpy": _OPT_NUM, "speedup_vs_best_peer": _OPT_NUM,
                "best_peer": _OPT_STR,
            }),
        },
        "skipped": {"type": "array", "items": _obj({"label": _STR, "op": _STR, "reason": _STR})},
        "notes": {"type": "array", "items": _STR},
    },
}
