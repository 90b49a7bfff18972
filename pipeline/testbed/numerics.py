"""Which CPU kernels the family's float math runs on — and so whether another CPU rebuilds it bit for bit.

Two libraries choose kernels by the CPU they run on: ATen (torch's own element-wise ops,
reductions, attention) picks AVX-512, AVX2 or scalar code, and MKL (every fp32 matmul:
torch here is built with BLAS_INFO=mkl; oneDNN runs no primitive in this model's SFT)
picks its own code branch. Different kernels round differently, and 2,400 SFT steps
amplify the last bit into a different family. Measured on a 2-core AVX-512 CPU (docs/testbed.md,
"The CPU testbed family"): both choices change the trained weights; pinning both makes
an emulated AVX2-only CPU (`ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`) and
the native AVX-512 one give byte-equal weights.

- `native`: the fastest kernels of this CPU (deterministic on one machine only);
- `avx2`: ATen's AVX2 kernels and MKL's AVX2 branch. MKL documents this branch as
  reproducible across Intel CPUs only: on other CPUs (AMD) it silently falls back to
  its automatic branch;
- `compatible`: ATen's AVX2 kernels and MKL's COMPATIBLE branch (SSE2, no approximate
  reciprocals), the branch MKL documents for Intel and Intel-compatible CPUs alike.

Both variables are read when torch first dispatches a kernel or calls MKL, so `pin`
must run before the process does any torch work; spawned workers inherit them.
"""

from __future__ import annotations

import enum
import os


class Numerics(enum.Enum):
    NATIVE = "native"
    AVX2 = "avx2"
    COMPATIBLE = "compatible"


ENV = {
    Numerics.NATIVE: {},
    Numerics.AVX2: {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    Numerics.COMPATIBLE: {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
}
MKL_BRANCHES = {1: "off", 2: "auto", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2", 9: "AVX", 10: "AVX2",
                12: "AVX512", 14: "AVX512_E1"}  # MKL_CBWR_* constants of mkl_cbwr.h


def pin(numerics: Numerics, environ=os.environ) -> None:
    """Set the environment that selects `numerics`' kernels (overriding the same variables)."""
    environ.update(ENV[numerics])


def check(numerics: Numerics) -> dict:
    """`in_effect()`, after checking that the pinned kernels are the ones running."""
    from pipeline.errors import UserError

    now = in_effect()
    want = ENV[numerics]
    if want and now["aten_capability"] != want["ATEN_CPU_CAPABILITY"].upper():
        raise UserError(f"prepare.numerics {numerics.value}: torch runs its {now['aten_capability']} kernels (this CPU "
                        "lacks AVX2, or the process ran torch before `prepare`); run `s2lpo prepare` in a fresh "
                        "process, or set numerics: native")
    if want and now["mkl_branch"] not in ("unknown", want["MKL_CBWR"]):
        now["warning"] = (f"MKL runs its {now['mkl_branch']} branch, not {want['MKL_CBWR']} (it honours AVX2 on Intel "
                          "CPUs only): this family may differ from one built on another CPU; numerics: compatible "
                          "pins MKL on any x86 CPU")
    return {"setting": numerics.value, **now}


def in_effect() -> dict:
    """The kernels this process actually runs: ATen's capability and MKL's CNR branch."""
    import torch

    return {"aten_capability": torch.backends.cpu.get_cpu_capability(), "mkl_branch": _mkl_branch()}


def _mkl_branch() -> str:
    """MKL's CNR branch read back from the library (`off` = no pinning), or `unknown`."""
    import ctypes

    import torch

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        code = lib.mkl_serv_cbwr_get(1)  # MKL_CBWR_BRANCH
    except (OSError, AttributeError):  # another build of torch: no MKL, or MKL not linked this way
        return "unknown"
    return MKL_BRANCHES.get(code, str(code))
