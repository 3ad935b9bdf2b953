"""Ahead-of-time resource report of the Triton attention kernels for a GPU we may not have.

Triton compiles for a named target on any machine (the wheel ships ``ptxas``), so shared memory,
registers, spills and the tensor-core instructions of every tuning config can be checked on a CPU:

    python -m tslayers.kernels.resources [--head-dims 64 128 256] [--dtypes bf16 fp16] [--json]

Must run *without* ``TRITON_INTERPRET=1`` (interpreted kernels cannot be compiled). Registers and
spill bytes come from ``ptxas -v`` run on the generated PTX with the flags Triton itself uses
(``CompiledKernel.n_regs`` needs a GPU driver). Importable with only torch and triton.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

HOPPER = (90, "sm_90a")  # (compute capability, ptxas --gpu-name)
SMEM_LIMIT = {90: 232_448}  # bytes of shared memory one block may opt into (H100/H200)
_F32_POINTERS = {"LSE", "ENT", "DIST", "PREF", "RECV", "DELTA", "DQ_ACC"}
_INT_POINTERS = {"KEY_LENGTHS"}
_INTS = {"H", "N_Q", "N_K", "N_BUCKET", "num_prefix"}
_FLOATS = {"qk_scale", "sm_scale"}


@dataclass
class Resources:
    kernel: str
    dtype: str
    head_dim: int
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    smem: int
    regs: int
    spill_bytes: int  # spill stores + spill loads per thread, as ptxas reports them
    tensor_core: str  # "wgmma", "mma" or "none": the fastest matrix instruction in the PTX
    fits: bool  # shared memory within the target's per-block limit

    def row(self) -> str:
        return (f"{self.kernel:<10} {self.dtype:<4} D={self.head_dim:<3} "
                f"{self.block_m:>3}x{self.block_n:<3} w{self.num_warps} s{self.num_stages}  "
                f"smem {self.smem:>7,} B  regs {self.regs:>3}  spills {self.spill_bytes:>5} B  "
                f"{self.tensor_core:<5} {'fits' if self.fits else 'DOES NOT FIT'}")


def ptxas_paths() -> list[str]:
    """Candidate ``ptxas`` binaries, newest first: the wheel ships one per CUDA major version
    (Triton 3.9 uses ``ptxas-blackwell`` for sm_90 too), else one on PATH."""
    import triton

    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    found = [os.path.join(bindir, n) for n in ("ptxas-blackwell", "ptxas")]
    found = [p for p in found if os.path.isfile(p) and os.access(p, os.X_OK)]
    on_path = shutil.which("ptxas")
    return found + ([on_path] if on_path else [])


def toolchain_available() -> bool:
    """True when Triton can compile for sm_90 here (CUDA backend + ptxas present)."""
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError:
        return False
    return bool(ptxas_paths())


def _signature(fn, dtype: str, constexprs: dict) -> tuple[dict, dict]:
    """Triton type strings for each argument, and 16-divisibility hints like the JIT would infer
    for contiguous tensors (pointers, and the row strides when D is a multiple of 16)."""
    sig, hints = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in _F32_POINTERS:
            sig[name] = "*fp32"
        elif name in _INT_POINTERS:
            sig[name] = "*i32"
        elif name in _INTS or name.startswith("stride_"):
            sig[name] = "i32"
        elif name in _FLOATS:
            sig[name] = "fp32"
        else:  # Q, K, V, O, DO, DQ, DK, DV
            sig[name] = f"*{dtype}"
        aligned_stride = name.startswith("stride_") and constexprs["HEAD_DIM"] % 16 == 0
        if sig[name].startswith("*") or aligned_stride:
            hints[(i,)] = [["tt.divisibility", 16]]
    return sig, hints


def _ptxas_usage(ptx: str, arch: str, fp_fusion: bool) -> tuple[int, int]:
    """(registers, spill bytes) from ``ptxas -v``, with the first bundled ptxas that accepts the
    PTX version Triton emitted."""
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for ptxas in ptxas_paths():
            cmd = [ptxas, "-v", f"--gpu-name={arch}", src, "-o", os.path.join(tmp, "k.cubin")]
            if not fp_fusion:
                cmd.insert(1, "--fmad=false")
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode == 0:
                log = res.stdout + res.stderr
                regs = int(re.search(r"Used (\d+) registers", log).group(1))
                spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))
                return regs, spills
            errors.append(f"{ptxas}: {res.stderr.strip()[-300:]}")
    raise RuntimeError("no ptxas could assemble the kernel:\n" + "\n".join(errors))


def compile_resources(
    fn, *, dtype: str, constexprs: dict, block_m: int, block_n: int, num_warps: int,
    num_stages: int, capability: int = HOPPER[0], arch: str = HOPPER[1], name: str | None = None,
) -> Resources:
    """Compile ``fn`` (a ``@triton.jit`` kernel) for ``capability`` and report its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    consts = {**constexprs, "BLOCK_M": block_m, "BLOCK_N": block_n}
    sig, hints = _signature(fn, dtype, consts)
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=hints)
    opts = dict(num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=True)
    k = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=opts)
    ptx = k.asm["ptx"]
    regs, spills = _ptxas_usage(ptx, arch, fp_fusion=True)
    tc = "wgmma" if "wgmma.mma_async" in ptx else ("mma" if "mma.sync" in ptx else "none")
    smem = int(k.metadata.shared)
    return Resources(
        kernel=name or fn.__name__, dtype=dtype, head_dim=constexprs["HEAD_DIM"],
        block_m=block_m, block_n=block_n, num_warps=num_warps, num_stages=num_stages,
        smem=smem, regs=regs, spill_bytes=spills, tensor_core=tc,
        fits=smem <= SMEM_LIMIT.get(capability, 0),
    )


def report(head_dims=(64, 128, 256), dtypes=("bf16", "fp16"), n: int = 4096,
           every_config: bool = False, first_only: bool = False,
           kernels: tuple[str, ...] | None = None) -> list[Resources]:
    """Resources of the tiles the autotuner would try at sequence length ``n`` (every tile of
    the plan with ``every_config``; only its first choice per kernel with ``first_only``), per
    kernel (all, or those named in ``kernels``), head dim and dtype."""
    from . import triton_attention as ta

    if ta.INTERPRETED:
        raise RuntimeError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    out, seen = [], set()
    for dtype in dtypes:
        for d in head_dims:
            for spec in ta.kernel_specs(d, dtype, n, every_config=every_config):
                if (first_only and (dtype, d, spec.name) in seen) or (
                    kernels and spec.name not in kernels
                ):
                    continue
                seen.add((dtype, d, spec.name))
                r = compile_resources(spec.fn, dtype=dtype, constexprs=spec.constexprs,
                                      block_m=spec.block_m, block_n=spec.block_n,
                                      num_warps=spec.num_warps, num_stages=spec.num_stages,
                                      name=spec.name)
                out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"])
    p.add_argument("--n", type=int, default=4096, help="sequence length the configs are for")
    p.add_argument("--every-config", action="store_true", help="every tile of the plans")
    p.add_argument("--first-only", action="store_true",
                   help="only the first tile offered per kernel (the largest)")
    p.add_argument("--kernels", nargs="+", default=None,
                   help="only these (fwd fwd_stats received bwd bwd_kv bwd_dq)")
    p.add_argument("--json", action="store_true", help="one JSON list on stdout")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET to compile for a GPU target", file=sys.stderr)
        return 2
    if not toolchain_available():
        print("no Triton CUDA toolchain (ptxas) here", file=sys.stderr)
        return 3
    rows = report(tuple(args.head_dims), tuple(args.dtypes), args.n, args.every_config,
                  args.first_only, tuple(args.kernels) if args.kernels else None)
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
    else:
        for r in rows:
            print(r.row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
