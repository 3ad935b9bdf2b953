"""GPU check and benchmark of the Triton attention kernels against torch SDPA.

    python benchmarks/bench_attention.py [--out benchmarks/results/attention]

1. Correctness first: the Triton kernels (output, log-sum-exp, every statistic, dQ/dK/dV from both
   backwards) against the fp32 math reference, with causal masks, padding and ragged lengths, in
   bf16, fp16 and fp32 (TF32 dots). Fixed tiles only: the autotuner's cache is left for the
   measured problems, each of which is tuned on itself.
2. Speed, in three row sets (TFLOP/s, and the Triton/SDPA ratios):
   - headline: bf16, D in {128, 64}, N in {512, 1024, 2048, 4096}, causal and not, ~16k tokens
     per row; forward, forward+backward (FlashAttention-2 and the deterministic backward),
     and the statistics-enabled forward. Always measured, whatever the time budget;
   - dtypes: fp16 and fp32 (TF32) at D=128 / D=64, N in {1024, 4096};
   - probe workload: short sequences N in {32, 64, 128, 256}, D=64, bf16 and fp32, many series.
   The last two sets stop at ``--budget`` seconds (what is skipped is listed).
3. The targets, each a PASS/FAIL line: forward >= 1.0x the best SDPA backend and
   forward+backward >= 0.9x (headline rows, N >= 1024), per-query statistics overhead <= 10%,
   forward >= 50% of the dense bf16 peak at N=4096, D=128; plus the agreement of every autotuned
   kernel with SDPA on the measured problem.

FLOPs: forward 4 B H N^2 D (halved when causal), backward 2.5x the forward. Needs only torch,
triton, einops and numpy. Every row is measured independently so one failure cannot take the
table down. ``--smoke`` runs the same code on the CPU under the Triton interpreter with tiny
shapes (to check the script itself, not the speed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: make `tslayers` importable
    sys.path.insert(0, str(REPO))

DENSE_BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0}
SDPA_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")
# max |triton - SDPA| / max |SDPA| allowed on the measured problems, per dtype
AGREE = {torch.float32: 5e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2}


def log(msg: str = "") -> None:
    print(msg, flush=True)


def dname(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
def make_timer(smoke: bool) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds of ``fn``: triton.testing.do_bench on GPU, wall clock in smoke mode."""
    if smoke:
        def wall(fn):
            fn()
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        return wall
    from triton.testing import do_bench

    def bench(fn):
        return float(do_bench(fn, warmup=10, rep=40, return_mode="median"))
    return bench


def fwd_flops(b: int, h: int, n: int, d: int, causal: bool) -> float:
    return 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)


# --------------------------------------------------------------------------------------------
# Correctness check
# --------------------------------------------------------------------------------------------
def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-6))


# (dtype, D, causal, padded, fixed blocks)
Case = tuple[torch.dtype, int, bool, bool, tuple[int, int]]


def correctness_check(device: str, n: int, cases: list[Case]) -> bool:
    """Triton vs the fp32 math reference; prints one line per case, returns overall pass.

    Fixed tiles throughout (``blocks=``), so no autotuning happens here: the benchmark rows
    autotune on the problems they measure."""
    from tslayers.kernels.reference import attention_reference
    from tslayers.kernels.triton_attention import flash_attention_forward, triton_attention

    log("== correctness vs math reference (fp32 reference on the same rounded inputs) ==")
    tol = {torch.float32: 5e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2}
    ok_all = True
    for dtype, d, causal, padded, blocks in cases:
        name = (f"{dname(dtype)} D={d} N={n} causal={causal} "
                f"{'padded' if padded else 'unpadded'} blocks={blocks}")
        try:
            g = torch.Generator(device="cpu").manual_seed(d + causal)
            b, h = 2, 3
            q, k, v, do = (torch.randn(b, h, n, d, generator=g).to(device=device, dtype=dtype)
                           for _ in range(4))
            lengths = torch.tensor([n, n // 2 + 3], device=device) if padded else None
            kw = dict(causal=causal, key_lengths=lengths, num_prefix=4)
            errs = {}
            leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
            r_out, _, r_lse, r_st = attention_reference(*leaves, **kw)
            r_grads = torch.autograd.grad(r_out, leaves, do.float())
            for det in (False, True):
                qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))
                o2, _ = triton_attention(qg, kg, vg, blocks=blocks, deterministic=det, **kw)
                grads = torch.autograd.grad(o2, (qg, kg, vg), do)
                tag = "det " if det else ""
                errs.update({tag + s: _rel_err(a, b_)
                             for s, a, b_ in zip(("dq", "dk", "dv"), grads, r_grads)})
            out, lse, st = flash_attention_forward(q, k, v, stats=True, blocks=blocks, **kw)
            errs.update({"out": _rel_err(out, r_out), "lse": _rel_err(lse, r_lse)})
            errs.update({s: _rel_err(a, b_) for s, a, b_ in zip(
                ("entropy", "distance", "prefix", "received"), st.as_tuple(), r_st.as_tuple())})
            ok = all(e <= tol[dtype] for e in errs.values())
            ok_all &= ok
            log(f"  {'PASS' if ok else 'FAIL'} {name}: "
                + " ".join(f"{k_}={e:.1e}" for k_, e in errs.items()))
        except Exception as exc:  # report and continue
            ok_all = False
            log(f"  ERROR {name}: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
    log(f"  correctness: {'PASS' if ok_all else 'FAIL'} (max error / max |reference| <= "
        + ", ".join(f"{dname(k_)} {v:.0e}" for k_, v in tol.items()) + ")")
    return ok_all


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------
def sdpa_fn(backend_name: str, causal: bool):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def bench_config(
    timer, b: int, h: int, n: int, d: int, causal: bool, dtype: torch.dtype, device: str,
    sdpa_names: tuple[str, ...], *, group: str, deterministic_row: bool = False,
) -> dict:
    """One row: every Triton path is autotuned on exactly this problem before it is timed."""
    from tslayers.kernels.triton_attention import flash_attention_forward, triton_attention

    row: dict = dict(group=group, dtype=dname(dtype), B=b, H=h, N=n, D=d, causal=causal,
                     ms={}, errors={})
    g = torch.Generator(device="cpu").manual_seed(n + d)
    q, k, v, do = (torch.randn(b, h, n, d, generator=g).to(device=device, dtype=dtype)
                   for _ in range(4))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def measure(label: str, fn: Callable[[], object]) -> None:
        try:
            row["ms"][label] = timer(fn)
        except Exception as exc:
            row["errors"][label] = f"{type(exc).__name__}: {str(exc)[:200]}"

    def fwd_bwd(run):
        def step():
            out = run(qg, kg, vg)
            out.backward(do)
            qg.grad = kg.grad = vg.grad = None
        return step

    def tri(q_, k_, v_, det=False):
        return triton_attention(q_, k_, v_, causal=causal, deterministic=det)[0]

    with torch.no_grad():
        measure("triton", lambda: flash_attention_forward(q, k, v, causal=causal))
        measure("triton+qstats", lambda: flash_attention_forward(
            q, k, v, causal=causal, stats=True, received=False, num_prefix=1))
        measure("triton+stats", lambda: flash_attention_forward(
            q, k, v, causal=causal, stats=True, num_prefix=1))
    measure("triton fwd+bwd", fwd_bwd(tri))
    if deterministic_row:
        measure("triton-det fwd+bwd", fwd_bwd(lambda *a: tri(*a, det=True)))

    # agreement of the autotuned Triton kernels with SDPA on this very problem
    ref = None
    for name in sdpa_names:
        run = sdpa_fn(name, causal)
        with torch.no_grad():
            measure(f"{name} ", lambda run=run: run(q, k, v))
        if f"{name} " not in row["ms"]:
            continue
        measure(f"{name} fwd+bwd", fwd_bwd(run))
        if ref is None:
            qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
            out_r = run(qr, kr, vr)
            ref = (out_r.detach(), *torch.autograd.grad(out_r, (qr, kr, vr), do))
    if ref is not None:
        try:
            out = tri(qg, kg, vg)
            got = (out.detach(), *torch.autograd.grad(out, (qg, kg, vg), do))
            row["err_vs_sdpa"] = max(_rel_err(a, r) for a, r in zip(got, ref))
        except Exception as exc:
            row["errors"]["agreement"] = f"{type(exc).__name__}: {exc}"
    return row


def summarise(row: dict) -> dict:
    """TFLOP/s per measurement, best SDPA, ratios, statistics overhead."""
    f = fwd_flops(row["B"], row["H"], row["N"], row["D"], row["causal"])
    ms = row["ms"]
    tf = {}
    for label, t in ms.items():
        flops = 3.5 * f if label.endswith("fwd+bwd") else f
        tf[label.strip()] = flops / (t * 1e-3) / 1e12
    sdpa_fwd = {k: v for k, v in tf.items() if k in SDPA_BACKENDS}
    sdpa_fb = {k.split()[0]: v for k, v in tf.items() if k.endswith("fwd+bwd")
               and not k.startswith("triton")}
    s = dict(tflops=tf)
    if sdpa_fwd:
        best = max(sdpa_fwd, key=sdpa_fwd.get)
        s["best_sdpa_fwd"] = best
        if "triton" in tf:
            s["ratio_fwd"] = tf["triton"] / sdpa_fwd[best]
    if sdpa_fb:
        best = max(sdpa_fb, key=sdpa_fb.get)
        s["best_sdpa_fwdbwd"] = best
        if "triton fwd+bwd" in tf:
            s["ratio_fwdbwd"] = tf["triton fwd+bwd"] / sdpa_fb[best]
    if "triton" in ms:
        for lab in ("triton+qstats", "triton+stats"):
            if lab in ms:
                s[f"overhead {lab}"] = ms[lab] / ms["triton"] - 1.0
    return s


def short(name: str) -> str:
    return {"FLASH_ATTENTION": "flash", "CUDNN_ATTENTION": "cudnn",
            "EFFICIENT_ATTENTION": "effic"}.get(name, name)


def table(rows: list[dict]) -> list[str]:
    head = ("| set | dtype | D | N | causal | B x H | triton fwd | SDPA fwd (best) | fwd ratio "
            "| triton f+b | det f+b | SDPA f+b (best) | f+b ratio | +qstats | +stats(all) "
            "| err vs SDPA |")
    lines = [head, "|" + "---|" * 16]

    def fmt(x, spec=".0f"):
        return "-" if x is None else format(x, spec)

    def pct(s, key):
        return fmt(100 * s[key] if key in s else None, "+.0f") + "%"

    for r in rows:
        lead = f"| {r['group']} | {r['dtype']} | {r['D']} | {r['N']} | {r['causal']} "
        if "skipped" in r:
            lines.append(lead + f"| - | {r['skipped']} |" + " - |" * 10)
            continue
        s, tf = r["summary"], r["summary"]["tflops"]
        bf, bfb = s.get("best_sdpa_fwd"), s.get("best_sdpa_fwdbwd")
        lines.append(
            lead + f"| {r['B']}x{r['H']} | {fmt(tf.get('triton'))} "
            f"| {fmt(tf.get(bf)) if bf else '-'} ({short(bf) if bf else '-'}) "
            f"| {fmt(s.get('ratio_fwd'), '.2f')} | {fmt(tf.get('triton fwd+bwd'))} "
            f"| {fmt(tf.get('triton-det fwd+bwd'))} "
            f"| {fmt(tf.get(bfb + ' fwd+bwd') if bfb else None)} ({short(bfb) if bfb else '-'}) "
            f"| {fmt(s.get('ratio_fwdbwd'), '.2f')} | {pct(s, 'overhead triton+qstats')} "
            f"| {pct(s, 'overhead triton+stats')} | {fmt(r.get('err_vs_sdpa'), '.1e')} |"
        )
    return lines


def targets(rows: list[dict], peak: float | None) -> tuple[list[str], bool]:
    """The issue's GPU targets, one PASS/FAIL line each, and whether all passed."""
    out: list[str] = []
    passed = True
    done = [r for r in rows if "summary" in r]
    head = [r for r in done if r["group"] == "headline" and r["N"] >= 1024]

    def check(label, values, ok):
        nonlocal passed
        if not values:
            out.append(f"FAIL {label}: no data")
            passed = False
            return
        good = all(ok(x) for x in values)
        passed &= good
        out.append(f"{'PASS' if good else 'FAIL'} {label} "
                   f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} rows)")

    check("forward >= 1.0x best SDPA backend (bf16, N >= 1024), ratio",
          [r["summary"]["ratio_fwd"] for r in head if "ratio_fwd" in r["summary"]],
          lambda x: x >= 1.0)
    check("forward+backward >= 0.9x best SDPA backend (bf16, N >= 1024), ratio",
          [r["summary"]["ratio_fwdbwd"] for r in head if "ratio_fwdbwd" in r["summary"]],
          lambda x: x >= 0.9)
    check("per-query statistics overhead <= 10% (bf16, N >= 1024), fraction",
          [r["summary"]["overhead triton+qstats"] for r in head
           if "overhead triton+qstats" in r["summary"]], lambda x: x <= 0.10)
    if peak:
        check(f"forward N=4096 D=128 bf16 >= 50% of dense bf16 peak ({peak:.0f} TFLOP/s), "
              "fraction",
              [r["summary"]["tflops"]["triton"] / peak for r in head
               if r["N"] == 4096 and r["D"] == 128 and "triton" in r["summary"]["tflops"]],
              lambda x: x >= 0.5)
    else:
        out.append("---- forward >= 50% of dense bf16 peak: peak of this GPU unknown")
    agree = [r for r in done if "err_vs_sdpa" in r]
    bad = [f"{r['dtype']} D={r['D']} N={r['N']}" for r in agree
           if r["err_vs_sdpa"] > AGREE[getattr(torch, r["dtype"])]]
    if agree and not bad:
        out.append(f"PASS autotuned kernels agree with SDPA on every measured problem "
                   f"({len(agree)} rows, out/dq/dk/dv)")
    else:
        passed = False
        out.append(f"FAIL autotuned kernels vs SDPA: {', '.join(bad) or 'no data'}")
    stats_all = [r["summary"]["overhead triton+stats"] for r in head
                 if "overhead triton+stats" in r["summary"]]
    if stats_all:
        out.append(f"info: statistics incl. the received-mass pass cost "
                   f"{100 * min(stats_all):+.0f}% to {100 * max(stats_all):+.0f}%")
    return out, passed


def plan_rows(smoke: bool) -> list[tuple[str, torch.dtype, int, int, bool, int, int]]:
    """(set, dtype, D, N, causal, B, H): headline rows first -- the budget never skips them."""
    if smoke:
        f32 = torch.float32
        return [("headline", f32, 16, 72, c, 1, 2) for c in (False, True)] + [
            ("dtypes", torch.float16, 16, 40, False, 1, 2), ("probe", f32, 16, 24, False, 3, 2)]
    rows = []
    for d in (128, 64):
        for causal in (False, True):
            for n in (512, 1024, 2048, 4096):
                rows.append(("headline", torch.bfloat16, d, n, causal, max(1, 16384 // n),
                             2048 // d))
    for dtype, d in ((torch.float16, 128), (torch.float32, 128), (torch.float32, 64)):
        for n in (1024, 4096):
            rows.append(("dtypes", dtype, d, n, False, max(1, 16384 // n), 2048 // d))
    for dtype in (torch.bfloat16, torch.float32):
        for n in (32, 64, 128, 256):  # the probe workload: many short series, small heads
            rows.append(("probe", dtype, 64, n, False, 65536 // n, 4))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="also write the results: PATH.md / PATH.json (or the one suffix given)")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds after which the remaining non-headline rows are skipped")
    p.add_argument("--smoke", action="store_true",
                   help="tiny CPU run under the Triton interpreter (checks the script only)")
    args = p.parse_args(argv)
    t_start = time.time()

    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are imported
        device, check_n = "cpu", 45
        cases = [(torch.float32, 16, True, True, (32, 16)),
                 (torch.float16, 16, False, False, (16, 16))]
    else:
        if not torch.cuda.is_available():
            log("bench_attention: no CUDA device found. This benchmark measures the Triton "
                "kernels on a GPU (H100/H200 class); run it there, or use --smoke to check the "
                "script on the CPU under the Triton interpreter.")
            return 2
        device, check_n = "cuda", 300
        bf16 = torch.bfloat16
        cases = [(bf16, 64, True, True, (64, 64)), (bf16, 128, False, True, (64, 64)),
                 (bf16, 256, True, False, (32, 32)), (torch.float16, 128, True, False, (64, 32)),
                 (torch.float32, 64, False, True, (64, 32)),
                 (torch.float32, 128, True, False, (32, 32))]

    try:
        import triton
    except ImportError:
        log("bench_attention: triton is not importable; install triton>=3.6")
        return 2
    import tslayers.kernels.triton_attention as ta

    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)"
    peak = next((v for k, v in DENSE_BF16_PEAK_TFLOPS.items() if k in gpu), None)
    meta = dict(gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                python=sys.version.split()[0], interpreted=ta.INTERPRETED, peak_tflops=peak,
                fp32_matmul_precision=torch.get_float32_matmul_precision())
    log("== bench_attention == " + " ".join(f"{k}={v}" for k, v in meta.items()))

    ok = correctness_check(device, check_n, cases)
    log(f"   [{time.time() - t_start:.0f}s]")

    from torch.nn.attention import SDPBackend
    sdpa_names = tuple(n for n in SDPA_BACKENDS if hasattr(SDPBackend, n))
    timer = make_timer(args.smoke)
    rows: list[dict] = []
    log("== speed (TFLOP/s; fwd+bwd counts 3.5x the forward FLOPs) ==")
    for group, dtype, d, n, causal, b, h in plan_rows(args.smoke):
        base = dict(group=group, dtype=dname(dtype), B=b, H=h, N=n, D=d, causal=causal)
        if group != "headline" and time.time() - t_start > args.budget:
            rows.append(dict(base, skipped="skipped (time budget)"))
            continue
        t0 = time.time()
        try:
            row = bench_config(timer, b, h, n, d, causal, dtype, device, sdpa_names,
                               group=group, deterministic_row=group == "headline")
            row["summary"] = summarise(row)
        except Exception as exc:
            row = dict(base, skipped=f"error: {type(exc).__name__}: {str(exc)[:120]}")
        rows.append(row)
        tf = row.get("summary", {}).get("tflops", {})
        log(f"  {group} {dname(dtype)} D={d} N={n} causal={causal} B={b} H={h} "
            f"[{time.time() - t0:.1f}s] " + " ".join(f"{k}={v:.0f}" for k, v in tf.items())
            + (f" errors={row['errors']}" if row.get("errors") else "")
            + (f" {row['skipped']}" if "skipped" in row else ""))
        if device == "cuda":
            torch.cuda.empty_cache()

    lines = table(rows)
    goals, met = targets(rows, peak)
    log("")
    log("\n".join(lines))
    log("")
    log("targets:")
    log("\n".join(goals))
    log(f"correctness: {'PASS' if ok else 'FAIL'}; targets: {'PASS' if met else 'FAIL'}; "
        f"total {time.time() - t_start:.0f}s")

    if args.out is not None:
        out = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        suffixes = [out.suffix] if out.suffix in (".md", ".json") else [".md", ".json"]
        base = out.with_suffix("") if out.suffix in (".md", ".json") else out
        for suf in suffixes:
            path = Path(str(base) + suf)
            if suf == ".md":
                header = [f"# Attention benchmark ({gpu})", "",
                          " ".join(f"{k}={v}" for k, v in meta.items()), "",
                          f"correctness: {'PASS' if ok else 'FAIL'}", ""]
                path.write_text("\n".join(header + lines + ["", "targets:", *goals]) + "\n")
            else:
                path.write_text(json.dumps(dict(meta=meta, correctness=ok, rows=rows,
                                                targets=goals), indent=1, default=str))
            log(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
