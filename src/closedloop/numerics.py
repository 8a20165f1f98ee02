"""The CPU's numerical path, pinned so that the same inputs give the same bytes on any x86-64.

MKL and ATen pick kernels by the CPU they run on (AVX-512 here, AVX2 on an older runner), and
a float sum split over more threads rounds differently, so the same seed gives other weights
on another machine. `numerics:` in conf/config.yaml names one path for every machine: MKL's
conditional numerical reproducibility mode (MKL_CBWR), ATen's CPU capability
(ATEN_CPU_CAPABILITY) and the intra-op thread count.

MKL and ATen read their variables once, at their first call, so they must be in the
environment before torch computes anything: `pipelines/__init__.py` pins them from
params.yaml before a stage imports torch, and the library pins again where it trains or
predicts (threads can change at any time; a kernel choice already made cannot, and says so).
One more path is not the CPU's to choose but the model's: torch computes sqrt, exp, log,
tanh, sin, cos and erf of a float CPU tensor with MKL's vector math (VML), which picks its
kernel by the CPU and ignores MKL_CBWR (measured: an AMD EPYC and an emulated Intel CPU give
other last bits). The shipped configs avoid it (AdamW with `fused: true`), and
`vector_math_watch` finds it where a user's model or optimiser calls it, so training warns.
A leaf module: it imports nothing from the library and torch only if it is already loaded.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from pathlib import Path

# Config key -> the environment variables it sets.
VARIABLES = {
    "mkl_cbwr": ("MKL_CBWR",),
    "aten_cpu_capability": ("ATEN_CPU_CAPABILITY",),
    "intra_op_threads": ("OMP_NUM_THREADS", "MKL_NUM_THREADS"),
}
# The branches MKL documents for MKL_CBWR (each may end in ",STRICT").
MKL_BRANCHES = ("AUTO", "COMPATIBLE", "SSE2", "SSE4_2", "AVX", "AVX2", "AVX512", "AVX512_E1")
ATEN_CAPABILITIES = ("default", "avx2", "avx512")
# ATen ops whose float CPU kernel is MKL's vector math (torch's aten/src/ATen/cpu/vml.h), in
# place (`sqrt_`) or not; their last bit depends on the CPU whatever MKL_CBWR says.
VECTOR_MATH_OPS = frozenset(
    {"acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2"}
    | {"sin", "sqrt", "tan", "tanh"}
)
_warned: set[str] = set()


def check(numerics: dict) -> list[tuple[str, str]]:
    """Problems with a `numerics` block, as (key, message); null leaves a setting to the CPU."""
    branch = numerics.get("mkl_cbwr")
    if branch is not None and str(branch).upper().removesuffix(",STRICT") not in MKL_BRANCHES:
        return [
            ("mkl_cbwr", f"unknown MKL branch {branch!r} (choose from: {', '.join(MKL_BRANCHES)})")
        ]
    capability = numerics.get("aten_cpu_capability")
    if capability is not None and capability not in ATEN_CAPABILITIES:
        return [
            (
                "aten_cpu_capability",
                f"unknown capability {capability!r} (choose from: {', '.join(ATEN_CAPABILITIES)})",
            )
        ]
    threads = numerics.get("intra_op_threads")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        return [("intra_op_threads", f"must be an integer >= 1 (or null), got {threads!r}")]
    return []


def environment(numerics: dict | None) -> dict[str, str]:
    """The environment variables a `numerics` block sets (null settings set nothing)."""
    env: dict[str, str] = {}
    for key, names in VARIABLES.items():
        value = (numerics or {}).get(key)
        if value is not None:
            env |= dict.fromkeys(names, str(value))
    return env


def pin(numerics: dict | None) -> None:
    """Put the numerical path in the environment; if torch is loaded, apply what still can be.

    Call it before torch computes anything. Later, the thread count still changes; a kernel
    choice that torch or MKL has already made does not, and a warning says which.
    """
    os.environ.update(environment(numerics))
    torch = sys.modules.get("torch")
    if torch is None or not numerics:
        return
    if numerics.get("intra_op_threads") is not None:
        torch.set_num_threads(numerics["intra_op_threads"])
    want = numerics.get("aten_cpu_capability")
    have = torch.backends.cpu.get_cpu_capability().lower()
    if want is not None and have != want:
        _warn(f"ATen already chose {have} kernels in this process, not {want}")
    if numerics.get("mkl_cbwr") is not None and mkl_started_unpinned():
        _warn(f"MKL already started in this process without MKL_CBWR={numerics['mkl_cbwr']}")


_PIN_FIRST = (
    "Pin before torch computes anything (`python -m pipelines.<stage>` does; or "
    "closedloop.numerics.pin first)."
)


def _warn(what: str, advice: str = _PIN_FIRST) -> None:
    if what not in _warned:
        _warned.add(what)
        warnings.warn(
            f"numerics: {what}; its bytes may differ on another CPU. {advice}",
            RuntimeWarning,
            stacklevel=3,
        )


def mkl_started_unpinned() -> bool:
    """True when torch's MKL has already started with no CBWR branch in this process.

    Asks MKL through the symbol torch's CPU library exports (mkl_serv_cbwr_get; 1 is
    MKL_CBWR_BRANCH_OFF); False where it cannot be asked. Asking starts MKL's CBWR state from
    the environment, which `pin` has just set.
    """
    torch = sys.modules.get("torch")
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        return lib.mkl_serv_cbwr_get(1) == 1
    except (OSError, AttributeError, TypeError):
        return False


def vector_math_watch():
    """A context manager recording, in its ``.seen`` set, the VML-backed ATen ops (see
    VECTOR_MATH_OPS) run on float CPU tensors inside it; it changes no result."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class VectorMathWatch(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name.removeprefix("aten::").removesuffix("_")
            if name in VECTOR_MATH_OPS:
                first = args[0] if args else None
                if (
                    isinstance(first, torch.Tensor)
                    and first.device.type == "cpu"
                    and first.dtype in (torch.float32, torch.float64)
                ):
                    self.seen.add(name)
            return func(*args, **(kwargs or {}))

    return VectorMathWatch()


def warn_vector_math(seen: set[str], where: str) -> None:
    """Warn that ``where`` ran VML-backed ops, so its bytes are this CPU's only."""
    if seen:
        ops = ", ".join(f"torch.{op}" for op in sorted(seen))
        _warn(
            f"{where} ran {ops} on the CPU through MKL's vector math, whose kernel the CPU picks",
            "Use ops or options without it: `fused: true` on Adam or AdamW, say.",
        )


def pin_from_params(path: Path | str) -> dict | None:
    """Pin the `numerics` block of a params.yaml, read as plain YAML (the stage validates it
    later, with the rest); nothing when the file or the block is missing or unreadable."""
    import yaml

    try:
        numerics = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("numerics")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if isinstance(numerics, dict) and not check(numerics):
        pin(numerics)
        return numerics
    return None
