"""Fuzzing of the entry points that take arrays or files from outside: a corrupt input must raise, not crash.

Hypothesis generates case descriptions (JSON: which entry point, the valid input it starts from and
the corruptions to apply, see ``tests/_fuzz_cases.py``); batches of cases run in one subprocess each,
so that a segfault or abort is a failed test that names the case, not the end of the test run. Every
case must either raise a Python exception or return a result consistent with its input (checked
against NumPy). Entry points:

- ``SparseMLP.load`` / ``SparseNetwork.load`` of a damaged model file, then predict and fit;
- ``set_cy.ops`` on scipy CSR matrices corrupted after construction, and wrong dense operands;
- ``set_cy.SparseLinear.from_scipy`` of such matrices, then forward, backward, step, evolve;
- ``set_cy.torch.SparseLinear.load_state_dict`` of corrupted buffers, then forward and backward;
- ``set_cy.torch.sparse_linear`` with a corrupted ``SparsePattern``.

The default run (CI) draws about 400 cases, the same ones every run (fixed seeds, see :func:`draw_cases`).
Environment: ``SET_CY_FUZZ_CASES=N`` draws about ``N`` cases in all (shared among the five tests as
``SHARES`` says), ``SET_CY_FUZZ_SEED=S`` draws other cases (reproducibly for a given ``S``),
``SET_CY_FUZZ_BATCH`` sets the number of cases per subprocess (default 40). See tests/README-fuzz.md.

When a batch crashes, the case it printed last is run again alone and reduced (corruptions dropped
one at a time while it still crashes); the failure message gives the case, the reduced case, the
signal and the Python traceback of the crash (faulthandler). The rest of the batch then continues in
a new process. Running one case by hand::

    echo '<case JSON>' | python tests/_fuzz_cases.py -
"""
import json
import os
import signal
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

RUNNER = Path(__file__).resolve().parent / "_fuzz_cases.py"
TOTAL = int(os.environ.get("SET_CY_FUZZ_CASES", "400"))
SEED = os.environ.get("SET_CY_FUZZ_SEED")
BATCH = int(os.environ.get("SET_CY_FUZZ_BATCH", "40"))
SHARES = {"model": 0.3, "ops": 0.25, "linear": 0.15, "torch_state": 0.15, "torch_fn": 0.15}
BATCH_TIMEOUT = 600
MAX_CRASHES = 3  # per test: after that many crashes the rest of its cases are not run
MAX_REDUCE_RUNS = 6

# --------------------------------------------------------------------------------------------------
# strategies: case descriptions (plain JSON values) for tests/_fuzz_cases.py
# --------------------------------------------------------------------------------------------------
# values relative to the array's valid range ("n": one past the last valid index), the int32/int64
# limits, non-finite floats, and small numbers
VALUES = st.one_of(st.sampled_from(["n", "n+1", "n-1", "2n", "-1", "-n", "max32", "max32+1", "min32", "max64",
                                    "min64", "2**40", "nan", "inf", "-inf"]), st.integers(-3, 40))
POS = st.one_of(st.sampled_from(["first", "last"]), st.integers(0, 63))


def array_ops(dtypes, noncontig=False):
    """Corruptions of one array (see ``_fuzz_cases.mutate``); ``dtypes``: what ``astype`` may choose."""
    ops = [
        st.builds(dict, op=st.just("set"), pos=POS, value=VALUES),
        st.builds(dict, op=st.just("swap"), i=POS, j=POS),
        st.builds(dict, op=st.sampled_from(["reverse", "reshape2d", "empty", "scalar"])),
        st.builds(dict, op=st.just("shuffle"), seed=st.integers(0, 2 ** 16)),
        st.builds(dict, op=st.just("add"), value=st.sampled_from([-2, -1, 1, 2, "n", "max32"])),
        st.builds(dict, op=st.just("truncate"), k=st.integers(1, 3)),
        st.builds(dict, op=st.just("extend"), k=st.integers(1, 3), value=VALUES),
        st.builds(dict, op=st.just("astype"), dtype=st.sampled_from(dtypes)),
        st.builds(dict, op=st.just("fill"), value=VALUES),
        st.builds(dict, op=st.just("set"), pos=POS, value=VALUES),
    ]
    if noncontig:
        ops.append(st.just({"op": "noncontig"}))
    return st.one_of(*ops)


def with_primary(primary, others, max_others=1):
    """Lists of corruptions: one from ``primary``, then up to ``max_others`` from ``others``."""
    return st.tuples(primary, st.lists(others, max_size=max_others)).map(lambda t: [t[0], *t[1]])


# Hypothesis draws the branches of a one_of very unevenly over a few hundred examples (it favours some
# branch indices and reuses choices of earlier examples), so each test draws its cases from several
# strategies in equal numbers ("strata"), one per family of corruptions, rather than from one mixture.

# ---- entry point 1: model files
LAYER_ARRAYS = ("indptr", "indices", "data", "velocity", "bias", "bias_velocity")
PATTERN_KEYS = ["layer0_indptr", "layer0_indices", "layer1_indptr", "layer1_indices"]
VALUE_KEYS = [f"layer{i}_{n}" for i in (0, 1) for n in LAYER_ARRAYS[2:]]
MODEL_DTYPES = ["int32", "int64", "float32", "float64", "int8", "uint32", "uint64", "bool", "float16", "str", "object",
                "complex128"]
JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10 ** 6),
                        st.sampled_from([2 ** 31, 2 ** 63, -2 ** 31]),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.sampled_from(["relu", "tanh", "float64", "float16", "int32", "he_uniform", "er", "fan_in",
                                         "mse", "openmp", "dask"]),
                        st.lists(st.integers(-2, 50), max_size=4), st.dictionaries(st.text(max_size=4), st.integers()))
LAYER_SIZES = st.one_of(
    st.sampled_from([[20, 16, 3], [20, 16, 4], [21, 16, 3], [19, 16, 3], [20, 15, 3], [20, 17, 3], [20, 16],
                     [20, 16, 3, 3], [0, 16, 3], [20, -16, 3], [20.0, 16, 3], ["20", 16, 3], [], [20],
                     [10 ** 6, 16, 3], [20, 16, 3.5], [True, 16, 3], None, "20,16,3"]),
    st.lists(st.integers(-2, 40), max_size=5))
CONFIG_FIELDS = ["epsilon", "activation", "dropout", "init", "dtype", "seed", "loss", "allocation", "activation_alpha",
                 "lr_scaling", "unknown_field"]
GARBAGE_TEXT = st.one_of(st.sampled_from(["", "{", "null", "[]", "1", '"x"', "{}", "[1, 2]", "NaN", "true",
                                          '{"layer_sizes": [20, 16, 3]}', '{"bit_generator": "PCG64"}',
                                          '{"bit_generator": "MT19937", "state": {}}']),
                         st.text(max_size=12))


def _model_arrays(keys):
    return st.builds(dict, m=st.just("array"), key=st.sampled_from(keys), op=array_ops(MODEL_DTYPES))


MODEL_FAMILIES = {
    "pattern": _model_arrays(PATTERN_KEYS),
    "values": _model_arrays(VALUE_KEYS),
    "extras": _model_arrays(["input_mask", "extra_order"]),
    "keys": st.one_of(
        st.builds(dict, m=st.just("delete"),
                  key=st.sampled_from(PATTERN_KEYS + VALUE_KEYS + ["input_mask", "extra_order", "config", "rng_state",
                                                                   "extra_state", "format_version"])),
        st.builds(dict, m=st.just("extra"), key=st.sampled_from(["layer2_indptr", "layer2_indices", "extra_foo", "junk",
                                                                 "input_mask", "extra_order", "layer-1_data"]),
                  dtype=st.sampled_from(MODEL_DTYPES), size=st.integers(0, 30))),
    "config": st.one_of(
        st.builds(dict, m=st.just("config"), field=st.just("layer_sizes"), value=LAYER_SIZES),
        st.builds(dict, m=st.just("config"), field=st.sampled_from(CONFIG_FIELDS), value=JSON_VALUES),
        st.builds(dict, m=st.just("config"), field=st.sampled_from(CONFIG_FIELDS + ["layer_sizes"]),
                  delete=st.just(True))),
    "state": st.one_of(
        st.builds(dict, m=st.just("extra_state"),
                  field=st.sampled_from(["epoch", "batch", "n_samples", "epochs_trained", "history", "meta", "sums",
                                         "train_state", "backend", "order"]),
                  value=JSON_VALUES, train_state=st.booleans()),
        st.builds(dict, m=st.just("text"), text=GARBAGE_TEXT,
                  key=st.sampled_from(["config", "rng_state", "extra_state", "format_version"]))),
    "foreign": st.builds(dict, m=st.just("foreign"), seed=st.integers(0, 10 ** 4), n=st.integers(0, 8)),
}
MODEL_MUTATION = st.one_of(*MODEL_FAMILIES.values())
FILE_DAMAGE = st.one_of(
    st.builds(dict, how=st.just("truncate"), frac=st.floats(0.0, 0.999)),
    st.builds(dict, how=st.just("flip"), n=st.integers(1, 8), seed=st.integers(0, 10 ** 4)),
    st.builds(dict, how=st.just("garbage"), n=st.integers(0, 300), seed=st.integers(0, 10 ** 4)),
    st.just({"how": "empty"}),
    # zip members that lie about their size (issue 25): a stream inflating past its stated size, headers
    # declaring far more than the member holds; special files and a missing directory in place of the file
    st.builds(dict, how=st.just("inflate"), key=st.sampled_from(PATTERN_KEYS + VALUE_KEYS + ["config", "extra_order"]),
              extra=st.sampled_from([1, 7, 4096, 1 << 21])),
    st.builds(dict, how=st.just("declare"), key=st.sampled_from(PATTERN_KEYS + VALUE_KEYS + ["extra_order"]),
              factor=st.sampled_from([2, 1000, 2 ** 20, 2 ** 31])),
    st.sampled_from([{"how": "dev_zero"}, {"how": "directory"}, {"how": "missing_dir"}]),
)
MODEL_BASE = {"kind": st.just("model"), "base": st.sampled_from(["complete", "interrupted", "pruned"]),
              "loader": st.sampled_from(["SparseMLP", "SparseNetwork"]), "resume": st.booleans(),
              "compressed": st.booleans()}
MODEL_STRATA = [st.fixed_dictionaries({**MODEL_BASE, "mutations": with_primary(family, MODEL_MUTATION)})
                for family in MODEL_FAMILIES.values()]
MODEL_STRATA.append(st.fixed_dictionaries({**MODEL_BASE, "mutations": st.lists(MODEL_MUTATION, max_size=1),
                                           "file": FILE_DAMAGE}))

# ---- entry points 2 and 3: scipy CSR matrices and dense operands
CSR_DTYPES = ["int32", "int64", "float32", "float64", "int16", "uint32", "uint64", "float16", "bool", "complex128"]


def _csr_mutation(arrs):
    return st.fixed_dictionaries({"arr": st.sampled_from(arrs), "op": array_ops(CSR_DTYPES, noncontig=True),
                                  "inplace": st.booleans()})


CSR_MUTATION = _csr_mutation(["indptr", "indices", "data"])
DENSE_OP = st.one_of(
    st.builds(dict, op=st.sampled_from(["rows", "cols"]), delta=st.sampled_from([-2, -1, 1, 2])),
    st.builds(dict, op=st.just("dtype"),
              dtype=st.sampled_from(["float32", "float64", "float16", "int64", "complex128", "bool", "object"])),
    st.builds(dict, op=st.sampled_from(["ndim1", "ndim3", "fortran", "strided", "list", "readonly"])),
    st.builds(dict, op=st.sampled_from(["nan", "inf"]), pos=st.integers(0, 50)),
)
DENSE_OPS = st.lists(DENSE_OP, min_size=1, max_size=2)
HP = st.one_of(st.sampled_from([0.0, 0.01, 0.5, 1.0, 1.5, -0.1, None, "0.1", True]),
               st.floats(-1, 2), st.floats(allow_nan=True, allow_infinity=True))
THREADS = st.sampled_from(["none", 1, 2, 3, -1, -2, 0, True, 2.5, 2 ** 31, "2", "none"])
CSR_FIELDS = {"shape": st.tuples(st.integers(0, 9), st.integers(0, 9)),
              "density": st.sampled_from([0.0, 0.2, 0.5, 1.0]), "dtype": st.sampled_from(["float32", "float64"]),
              "index_dtype": st.sampled_from(["int32", "int64"]), "seed": st.integers(0, 1000),
              "format": st.sampled_from(["array", "matrix"]), "cache_canonical": st.booleans(),
              "batch": st.integers(0, 6), "n_threads": THREADS}
PRODUCTS = ["sparse_matmul", "sparse_matmul_t", "sddmm"]
OP_ATTACK = st.one_of(
    st.builds(dict, attr=st.just("shape"), delta=st.tuples(st.integers(-3, 3), st.integers(-3, 3))),
    st.builds(dict, attr=st.just("values"), op=array_ops(["float32", "float64", "int32", "float16"], noncontig=True)),
    st.builds(dict, attr=st.just("values_inplace"), op=array_ops(["float32"])),
    st.builds(dict, attr=st.just("n_threads"), value=st.sampled_from([None, 1, 2, 0, -1, -3, 2.5, "2", True])),
)
OUT = st.builds(dict, kind=st.sampled_from(["ok", "fortran", "shape", "dtype", "readonly", "noncontig", "ndim", "list",
                                            "alias", "none", "alias"]),
                delta=st.sampled_from([-1, 1]), dtype=st.sampled_from(["float16", "float32", "float64", "int32"]))
ORDER = st.sampled_from([None, "C", "F", "x", 1, "F"])
FORTRAN = st.just([{"op": "fortran"}])
OPS_STRATA = [
    # a corrupted matrix, right dense operands
    *[st.fixed_dictionaries({"kind": st.just("ops"), "fn": st.sampled_from(PRODUCTS),
                             "mutations": with_primary(_csr_mutation([arr]), CSR_MUTATION, 2), **CSR_FIELDS})
      for arr in ("indptr", "indices", "data")],
    # a valid matrix, wrong dense operands
    st.fixed_dictionaries({"kind": st.just("ops"), "fn": st.sampled_from(PRODUCTS),
                           "dense": st.fixed_dictionaries({}, optional={"X": DENSE_OPS, "D": DENSE_OPS}),
                           **CSR_FIELDS}),
    # a SparseOperator whose attributes are changed after construction
    st.fixed_dictionaries({"kind": st.just("ops"), "fn": st.sampled_from(PRODUCTS), "operator": st.just(True),
                           "op_attack": st.lists(OP_ATTACK, min_size=1, max_size=2), **CSR_FIELDS}),
    # out= and order=, with a matrix or an operator (square shapes: out= may then be the input itself)
    st.fixed_dictionaries({"kind": st.just("ops"), "fn": st.sampled_from(PRODUCTS), "operator": st.booleans(),
                           "out": OUT, **CSR_FIELDS,
                           "shape": st.one_of(st.integers(1, 9).map(lambda n: (n, n)),
                                              st.tuples(st.integers(0, 9), st.integers(0, 9))),
                           "dense": st.fixed_dictionaries({}, optional={"X": FORTRAN, "D": FORTRAN})},
                          optional={"order": ORDER}),
    st.fixed_dictionaries({"kind": st.just("ops"), "fn": st.just("momentum_update"), "dtype": CSR_FIELDS["dtype"],
                           "n": st.integers(0, 40), "alias": st.sampled_from([None, "velocity", "grad", None]),
                           "n_threads": THREADS,
                           "hp": st.fixed_dictionaries({"lr": HP, "momentum": HP, "weight_decay": HP,
                                                        "nesterov": st.one_of(st.booleans(), st.just(1),
                                                                              st.just("yes"))}),
                           "dense": st.fixed_dictionaries({}, optional={k: DENSE_OPS
                                                                        for k in ("weights", "velocity", "grad")})}),
]
LINEAR_FIELDS = {"kind": st.just("linear"), **CSR_FIELDS, "zeta": st.sampled_from([0.0, 0.3, 1.0]),
                 "bias": st.builds(dict, kind=st.sampled_from(["none", "ok", "none", "ok"]))}
LINEAR_STRATA = [
    *[st.fixed_dictionaries({**LINEAR_FIELDS, "mutations": with_primary(_csr_mutation([arr]), CSR_MUTATION, 2)})
      for arr in ("indptr", "indices", "data")],
    st.fixed_dictionaries({**LINEAR_FIELDS,
                           "bias": st.builds(dict, kind=st.sampled_from(["none", "ok", "short", "long", "int",
                                                                         "complex", "str", "nan", "2d", "list",
                                                                         "false"])),
                           "dense": st.fixed_dictionaries({}, optional={"X": DENSE_OPS, "dY": DENSE_OPS})}),
]

# ---- entry point 4: the torch bridge
PATTERN_FIELDS = ["indptr", "indices", "t_indptr", "t_indices", "perm"]
TORCH_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64", "bool"]
TORCH_MODULE = {"shape": st.tuples(st.integers(1, 9), st.integers(1, 9)), "nnz": st.integers(0, 40),
                "dtype": st.sampled_from(["float32", "float64"]), "seed": st.integers(0, 1000),
                "has_bias": st.booleans(), "batch": st.integers(0, 4)}


def _buffer_mutation(keys):
    return st.fixed_dictionaries({"key": st.sampled_from(keys), "op": array_ops(TORCH_DTYPES, noncontig=True)})


BUFFER_MUTATION = _buffer_mutation(PATTERN_FIELDS + ["values", "bias"])
TORCH_STATE_FIELDS = {"kind": st.just("torch_state"), "strict": st.booleans(), "after_error": st.booleans(),
                      "evolve": st.booleans(), **TORCH_MODULE}
TORCH_STATE_STRATA = [
    *[st.fixed_dictionaries({**TORCH_STATE_FIELDS, "mutations": with_primary(_buffer_mutation([key]), BUFFER_MUTATION)})
      for key in PATTERN_FIELDS + ["values"]],
    st.fixed_dictionaries({**TORCH_STATE_FIELDS, "mutations": with_primary(st.one_of(
        st.builds(dict, key=st.sampled_from(PATTERN_FIELDS + ["values", "bias"]), delete=st.just(True)),
        st.builds(dict, key=st.just("extra_buffer"))), BUFFER_MUTATION)}),
]
TORCH_FN_FIELDS = {"kind": st.just("torch_fn"), "via": st.sampled_from(["sparse_linear", "function", "sparse_linear"]),
                   **TORCH_MODULE}
TORCH_FN_STRATA = [
    *[st.fixed_dictionaries({**TORCH_FN_FIELDS, "mutations": with_primary(_buffer_mutation([key]), BUFFER_MUTATION)})
      for key in PATTERN_FIELDS + ["values"]],
    st.fixed_dictionaries({**TORCH_FN_FIELDS, "mutations": with_primary(
        st.builds(dict, key=st.sampled_from(["n_in", "n_out"]),
                  value=st.sampled_from(["n+1", "n-1", "-1", "2n", "max32+1", 0, 1.5, True, None])),
        BUFFER_MUTATION)}),
]

STRATA = {"model": MODEL_STRATA, "ops": OPS_STRATA, "linear": LINEAR_STRATA, "torch_state": TORCH_STATE_STRATA,
          "torch_fn": TORCH_FN_STRATA}

# Cases that always run first: one of each kind of damage known to have crashed or to be delicate.
_TORCH = {"shape": [7, 5], "nnz": 12, "dtype": "float32", "seed": 0, "has_bias": True, "batch": 3}
_CSR = {"shape": [6, 5], "density": 0.4, "dtype": "float32", "index_dtype": "int32", "seed": 3, "format": "array",
        "batch": 3}


def _arr(key, op, **params):
    """A model-file array corruption."""
    return {"m": "array", "key": key, "op": {"op": op, **params}}


def _buf(key, op, **params):
    """A torch buffer (or SparsePattern field) corruption."""
    return {"key": key, "op": {"op": op, **params}}


def _sp(arr, op, **params):
    """An in-place corruption of an array of a scipy CSR matrix."""
    return {"arr": arr, "op": {"op": op, **params}, "inplace": True}


KNOWN = {
    "model": [
        {"kind": "model", "mutations": [], "file": {"how": "declare", "key": "layer0_data", "factor": 2 ** 31}},
        {"kind": "model", "mutations": [], "file": {"how": "inflate", "key": "layer1_bias", "extra": 1 << 21}},
        {"kind": "model", "mutations": [], "file": {"how": "dev_zero"}},
        {"kind": "model", "mutations": [_arr("layer0_indices", "set", pos=3, value="n")]},
        {"kind": "model", "mutations": [_arr("layer1_indptr", "set", pos="last", value="n+1")]},
        {"kind": "model", "mutations": [_arr("layer0_indptr", "reverse")]},
        {"kind": "model", "mutations": [_arr("layer0_indices", "astype", dtype="int64"),
                                        _arr("layer0_indptr", "astype", dtype="int64")]},
        {"kind": "model", "base": "interrupted", "resume": True,
         "mutations": [_arr("extra_order", "set", pos=0, value="2**40")]},
        {"kind": "model", "base": "pruned", "mutations": [_arr("input_mask", "truncate", k=1)]},
        {"kind": "model", "mutations": [{"m": "config", "field": "layer_sizes", "value": [21, 16, 3]}]},
        {"kind": "model", "mutations": [{"m": "text", "key": "config", "text": "{"}]},
        {"kind": "model", "mutations": [{"m": "foreign", "seed": 0, "n": 5}]},
        {"kind": "model", "mutations": [], "file": {"how": "truncate", "frac": 0.5}},
    ],
    "ops": [
        {"kind": "ops", "fn": "sparse_matmul", "cache_canonical": True, **_CSR,
         "mutations": [_sp("indices", "set", pos=0, value="n")]},
        {"kind": "ops", "fn": "sparse_matmul_t", "cache_canonical": True, **_CSR,
         "mutations": [_sp("indices", "reverse")]},
        {"kind": "ops", "fn": "sddmm", **_CSR, "mutations": [_sp("indptr", "set", pos="last", value="n+1")]},
        {"kind": "ops", "fn": "momentum_update", "dtype": "float32", "n": 10, "alias": "velocity",
         "hp": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}},
        {"kind": "ops", "fn": "sparse_matmul", **_CSR, "operator": True,
         "op_attack": [{"attr": "shape", "delta": [0, -3]}]},
        {"kind": "ops", "fn": "sparse_matmul", **_CSR, "shape": [6, 6], "out": {"kind": "alias"},
         "dense": {"X": [{"op": "fortran"}]}},
    ],
    "linear": [
        {"kind": "linear", "cache_canonical": True, **_CSR,
         "mutations": [_sp("indices", "set", pos="last", value="max32")]},
        {"kind": "linear", **_CSR, "mutations": [_sp("indptr", "swap", i=1, j=4)]},
    ],
    "torch_state": [
        {"kind": "torch_state", **_TORCH, "mutations": [_buf("indptr", "set", pos="last", value="max32")]},
        {"kind": "torch_state", **_TORCH, "mutations": [_buf("indices", "set", pos=0, value="n")]},
        {"kind": "torch_state", **_TORCH, "mutations": [_buf("perm", "swap", i=0, j=5)]},
        {"kind": "torch_state", **_TORCH, "mutations": [_buf("t_indptr", "reverse")]},
        {"kind": "torch_state", **_TORCH, "after_error": True,
         "mutations": [_buf("indptr", "set", pos=2, value="2**40"), _buf("values", "truncate", k=1)]},
    ],
    "torch_fn": [
        {"kind": "torch_fn", **_TORCH, "mutations": [_buf("indices", "set", pos=0, value="n")]},
        {"kind": "torch_fn", **_TORCH, "mutations": [_buf("t_indices", "set", pos=0, value="n")]},
        {"kind": "torch_fn", **_TORCH, "via": "function", "mutations": [_buf("perm", "set", pos=0, value="max32")]},
    ],
}


def draw_cases(kind, n):
    """About ``n`` case descriptions of ``kind``: the same ones every run for a given SET_CY_FUZZ_SEED (default 0).

    Equal numbers from each stratum of ``STRATA[kind]`` (rounded up), interleaved. The settings ask for
    ``derandomize=True`` (CI: no dependence on a random seed or on the example database); each stratum
    also gets its own fixed ``@seed`` (which takes precedence), so that strata do not all make the same
    choices (with one shared derandomized seed they would, the collecting function being the same code).
    """
    strata = STRATA[kind]
    per = -(-n // len(strata))
    drawn = []
    for k, strategy in enumerate(strata):
        cases = []

        @settings(max_examples=per, deadline=None, derandomize=SEED is None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(strategy)
        def collect(case):
            cases.append(case)

        seed(int(SEED or 0) * 1000003 + zlib.crc32(f"{kind}/{k}".encode()))(collect)()
        drawn.append(cases)
    return [c for group in zip(*drawn) for c in group] + [c for group in drawn for c in group[min(map(len, drawn)):]]


# --------------------------------------------------------------------------------------------------
# running batches
# --------------------------------------------------------------------------------------------------
def _text(s):
    return s.decode(errors="replace") if isinstance(s, bytes) else (s or "")


def run_batch(cases, workdir):
    """Run ``cases`` in one subprocess.

    Returns
    -------
    status : int or str
        The exit status (negative: killed by that signal), or ``"timeout"``.
    results : dict
        Case index -> its ``RESULT`` line (without ``RESULT <i>``).
    last : int or None
        Index of the last case started.
    stderr : str
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "cases.json"
    path.write_text(json.dumps(cases))
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "passive")  # spinning OpenMP threads crawl on a loaded machine
    try:
        res = subprocess.run([sys.executable, str(RUNNER), str(path), str(workdir)], capture_output=True, text=True,
                             timeout=BATCH_TIMEOUT, env=env, cwd=workdir)
        status, out, err = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as exc:
        status, out, err = "timeout", _text(exc.stdout), _text(exc.stderr)
    results, last = {}, None
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] in ("CASE", "RESULT") and parts[1].isdigit():
            if parts[0] == "CASE":
                last = int(parts[1])
            else:
                results[int(parts[1])] = parts[2] if len(parts) > 2 else ""
    return status, results, last, err


def _crashed(status):
    return status not in (0, 2)


def _status_name(status):
    if isinstance(status, int) and status < 0:
        try:
            return f"{signal.Signals(-status).name} (exit status {status})"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


def _outcome(line):
    """``"ok"``, ``"inconsistent"``, ``"harness-error"`` or ``"<ExceptionType> at <stage>"`` of a RESULT line."""
    words = line.split(":", 1)[0].split()
    if words and words[0] == "raised" and len(words) >= 3:
        return f"{words[-1]} at {' '.join(words[1:-1])}"
    return words[0] if words else "?"


def _simpler(case):
    """Cases with one thing less than ``case``: a corruption dropped, a flag off, an optional part removed."""
    for i in range(len(case.get("mutations", []))):
        yield {**case, "mutations": case["mutations"][:i] + case["mutations"][i + 1:]}
    for key in ("file", "dense", "bias", "alias"):
        if case.get(key):
            yield {k: v for k, v in case.items() if k != key}
    for key, v in case.items():
        if v is True:
            yield {**case, key: False}


def reduce_crash(case, workdir):
    """Run a crashing case alone, then drop parts of it while it still crashes.

    Returns
    -------
    alone : bool
        Whether the case crashes when run alone.
    reduced : dict
    status : int or str
        Exit status of the reduced case's last crashing run.
    stderr : str
        Its standard error (the faulthandler traceback).
    """
    status, _, _, err = run_batch([case], workdir)
    if not _crashed(status):
        return False, case, status, err
    runs = 1
    progress = True
    while progress and runs < MAX_REDUCE_RUNS:
        progress = False
        for cand in _simpler(case):
            if runs >= MAX_REDUCE_RUNS:
                break
            s, _, _, e = run_batch([cand], workdir)
            runs += 1
            if _crashed(s):
                case, status, err, progress = cand, s, e, True
                break
    return True, case, status, err


def find_culprit(batch, last, workdir):
    """For a crash that needs earlier cases of its batch: the largest ``j`` such that ``batch[j:last + 1]`` crashes.

    Returns None when even ``batch[:last + 1]`` does not crash again. A binary search (about
    ``log2(last)`` runs); heap damage need not crash every time, so the answer is a good guess.
    """
    if not _crashed(run_batch(batch[:last + 1], workdir)[0]):
        return None
    lo, hi = 0, last
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _crashed(run_batch(batch[mid:last + 1], workdir)[0]):
            lo = mid
        else:
            hi = mid - 1
    return lo


def fuzz(kind, tmp_path):
    """Run the known cases and about ``TOTAL * SHARES[kind]`` drawn cases of ``kind``; fail on crashes."""
    n = max(1, round(TOTAL * SHARES[kind]))
    cases = KNOWN[kind] + draw_cases(kind, max(1, n - len(KNOWN[kind])))
    counts = Counter()
    crashes, bad = [], []
    for b0 in range(0, len(cases), BATCH):
        batch = cases[b0:b0 + BATCH]
        while batch and len(crashes) < MAX_CRASHES:
            status, results, last, err = run_batch(batch, tmp_path / "batch")
            for i, line in results.items():
                counts[_outcome(line)] += 1
                if line.startswith(("inconsistent", "harness-error")):
                    bad.append((batch[i], line))
            if not _crashed(status):
                break
            if last is None:
                pytest.fail(f"the fuzz runner failed before its first case ({_status_name(status)}):\n{err[-3000:]}")
            # the case printed last; when it had printed its result, the crash came later (e.g. when the
            # garbage collector met a heap it had corrupted)
            how = _status_name(status) + (" after its result line" if last in results else "")
            counts["CRASH"] += 1
            alone, reduced, r_status, r_err = reduce_crash(batch[last], tmp_path / "reduce")
            culprit = None
            if not alone:
                j = find_culprit(batch, last, tmp_path / "reduce")
                earlier_bad = [batch[i] for i in sorted(results) if i < last and results[i].startswith("inconsistent")]
                if j is not None:
                    culprit = (f"with the {last - j} case(s) before it, it does: the first of them probably damaged "
                               f"the heap", batch[j])
                elif earlier_bad:
                    culprit = (f"{len(earlier_bad)} earlier case(s) of its batch ran on invalid input (inconsistent) "
                               f"and may have damaged the heap, the last {min(3, len(earlier_bad))}:",
                               earlier_bad[-3:])
            crashes.append((batch[last], how, alone, reduced, _status_name(r_status),
                            (r_err if alone else err)[-2500:], culprit))
            batch = batch[last + 1:]
    print(f"\n{kind}: {len(cases)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    msg = []
    for case, how, alone, reduced, r_how, err, culprit in crashes:
        if alone:
            where = f"  reduced (crashes alone, {r_how}):\n  {json.dumps(reduced)}\n"
        elif culprit is None:
            where = "  (it does not crash alone, and its batch up to it did not crash again)\n"
        else:
            where = f"  (it does not crash alone; {culprit[0]})\n  {json.dumps(culprit[1])}\n"
        msg.append(f"CRASH ({how}) of case\n  {json.dumps(case)}\n{where}  stderr tail:\n{err}")
    for case, line in bad[:10]:
        msg.append(f"{line}\n  case: {json.dumps(case)}")
    if len(bad) > 10:
        msg.append(f"... and {len(bad) - 10} more inconsistent results")
    assert not crashes and not bad, f"{kind}: {len(crashes)} crash(es), {len(bad)} inconsistent result(s)\n\n" + \
        "\n\n".join(msg)


def test_fuzz_model_load(tmp_path):
    fuzz("model", tmp_path)


def test_fuzz_ops(tmp_path):
    fuzz("ops", tmp_path)


def test_fuzz_sparse_linear_from_scipy(tmp_path):
    fuzz("linear", tmp_path)


def test_fuzz_torch_load_state_dict(tmp_path):
    pytest.importorskip("torch")
    fuzz("torch_state", tmp_path)


def test_fuzz_torch_sparse_linear(tmp_path):
    pytest.importorskip("torch")
    fuzz("torch_fn", tmp_path)
