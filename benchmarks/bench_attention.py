"""GPU check and benchmark of the Triton attention kernels against torch SDPA.

    python benchmarks/bench_attention.py [--out benchmarks/results/attention_h200]

1. Correctness first: the Triton kernels (output, log-sum-exp, every statistic, dQ/dK/dV) against
   the fp32 math reference, with causal masks, padding and ragged lengths, in bf16 and fp16.
2. Speed: forward and forward+backward TFLOP/s of the Triton kernel, of SDPA's flash / cuDNN /
   efficient backends, and of the statistics-enabled forward (per-query statistics alone, and with
   the per-key received-mass pass), bf16, D in {64, 128}, N in {512, 1024, 2048, 4096}, causal
   and not, ~16k tokens (B x N) per config; one table plus the Triton/SDPA ratios.

FLOPs: forward 4 B H N^2 D (halved when causal), backward 2.5x the forward. Needs only torch,
triton, einops and numpy; designed to finish in under 5 minutes on one H100/H200 (autotuning
included; a time budget skips what would not fit). Every config is measured independently so
one failure cannot take the table down. ``--smoke`` runs the same code on the CPU under the
Triton interpreter with tiny shapes (to check the script itself, not the speed).
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


def log(msg: str = "") -> None:
    print(msg, flush=True)


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


# (dtype, D, causal, padded, fixed blocks or None for the autotuned kernels)
Case = tuple[torch.dtype, int, bool, bool, "tuple[int, int] | None"]


def correctness_check(device: str, n: int, cases: list[Case]) -> bool:
    """Triton vs the fp32 math reference; prints one line per case, returns overall pass.

    Padded cases use fixed blocks (a few extra compilations); unpadded ones the autotuned kernels
    the benchmark uses afterwards (no extra compilation)."""
    from tslayers.kernels.reference import attention_reference
    from tslayers.kernels.triton_attention import flash_attention_forward, triton_attention

    log("== correctness vs math reference (fp32 reference on the same rounded inputs) ==")
    tol = {torch.float32: 2e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2}
    ok_all = True
    for dtype, d, causal, padded, blocks in cases:
        name = (f"{str(dtype).removeprefix('torch.')} D={d} N={n} causal={causal} "
                f"{'padded' if padded else 'unpadded'} blocks={blocks or 'autotuned'}")
        try:
            g = torch.Generator(device="cpu").manual_seed(d + causal)
            b, h = 2, 3
            q, k, v, do = (torch.randn(b, h, n, d, generator=g).to(device=device, dtype=dtype)
                           for _ in range(4))
            lengths = torch.tensor([n, n // 2 + 3], device=device) if padded else None
            kw = dict(causal=causal, key_lengths=lengths, num_prefix=4)
            # plain kernel first: the stats kernel reuses the tile autotuned for it
            qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))
            o2, _ = triton_attention(qg, kg, vg, blocks=blocks, **kw)
            grads = torch.autograd.grad(o2, (qg, kg, vg), do)
            out, lse, st = flash_attention_forward(q, k, v, stats=True, blocks=blocks, **kw)
            leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
            r_out, _, r_lse, r_st = attention_reference(*leaves, **kw)
            r_grads = torch.autograd.grad(r_out, leaves, do.float())
            errs = {
                "out": _rel_err(out, r_out),
                "lse": _rel_err(lse, r_lse),
                **{s: _rel_err(a, b_) for s, a, b_ in zip(
                    ("entropy", "distance", "prefix", "received"), st.as_tuple(),
                    r_st.as_tuple())},
                **{s: _rel_err(a, b_) for s, a, b_ in zip(("dq", "dk", "dv"), grads, r_grads)},
            }
            ok = all(e <= tol[dtype] for e in errs.values())
            ok_all &= ok
            log(f"  {'PASS' if ok else 'FAIL'} {name}: "
                + " ".join(f"{k_}={e:.1e}" for k_, e in errs.items()))
        except Exception as exc:  # report and continue
            ok_all = False
            log(f"  ERROR {name}: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
    log(f"  correctness: {'PASS' if ok_all else 'FAIL'} (max error / max |reference| <= "
        f"{tol[cases[0][0]] if cases else '-'})")
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
    sdpa_names: tuple[str, ...],
) -> dict:
    from tslayers.kernels.triton_attention import flash_attention_forward, triton_attention

    row: dict = dict(B=b, H=h, N=n, D=d, causal=causal, ms={}, errors={})
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

    def tri(q_, k_, v_):
        return triton_attention(q_, k_, v_, causal=causal)[0]

    with torch.no_grad():
        measure("triton", lambda: flash_attention_forward(q, k, v, causal=causal))
        measure("triton+qstats", lambda: flash_attention_forward(
            q, k, v, causal=causal, stats=True, received=False, num_prefix=1))
        measure("triton+stats", lambda: flash_attention_forward(
            q, k, v, causal=causal, stats=True, num_prefix=1))
    measure("triton fwd+bwd", fwd_bwd(tri))

    # agreement of the autotuned Triton path with SDPA (whichever backend runs)
    ref_out = None
    for name in sdpa_names:
        run = sdpa_fn(name, causal)
        with torch.no_grad():
            measure(f"{name} ", lambda run=run: run(q, k, v))
            if ref_out is None and f"{name} " in row["ms"]:
                ref_out = run(q, k, v).float()
        if f"{name} " in row["ms"]:
            measure(f"{name} fwd+bwd", fwd_bwd(run))
    if ref_out is not None:
        try:
            with torch.no_grad():
                out = flash_attention_forward(q, k, v, causal=causal)[0].float()
            row["max_abs_diff_vs_sdpa"] = float((out - ref_out).abs().max())
        except Exception as exc:
            row["errors"]["diff"] = f"{type(exc).__name__}: {exc}"
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
    head = ("| D | N | causal | B x H | triton fwd | SDPA fwd (best) | fwd ratio | triton f+b "
            "| SDPA f+b (best) | f+b ratio | +qstats | +stats(all) | max diff |")
    lines = [head, "|" + "---|" * 13]

    def fmt(x, spec=".0f"):
        return "-" if x is None else format(x, spec)

    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['D']} | {r['N']} | {r['causal']} | - | {r['skipped']} |"
                         + " - |" * 8)
            continue
        s, tf = r["summary"], r["summary"]["tflops"]
        bf, bfb = s.get("best_sdpa_fwd"), s.get("best_sdpa_fwdbwd")
        lines.append(
            f"| {r['D']} | {r['N']} | {r['causal']} | {r['B']}x{r['H']} "
            f"| {fmt(tf.get('triton'))} "
            f"| {fmt(tf.get(bf)) if bf else '-'} ({short(bf) if bf else '-'}) "
            f"| {fmt(s.get('ratio_fwd'), '.2f')} "
            f"| {fmt(tf.get('triton fwd+bwd'))} "
            f"| {fmt(tf.get(bfb + ' fwd+bwd') if bfb else None)} ({short(bfb) if bfb else '-'}) "
            f"| {fmt(s.get('ratio_fwdbwd'), '.2f')} "
            f"| {fmt(100 * s['overhead triton+qstats'] if 'overhead triton+qstats' in s else None, '+.0f')}% "  # noqa: E501
            f"| {fmt(100 * s['overhead triton+stats'] if 'overhead triton+stats' in s else None, '+.0f')}% "  # noqa: E501
            f"| {fmt(r.get('max_abs_diff_vs_sdpa'), '.1e')} |"
        )
    return lines


def targets(rows: list[dict], peak: float | None) -> list[str]:
    """The issue's GPU targets, each marked met / missed."""
    out = []
    done = [r for r in rows if "summary" in r]
    big = [r for r in done if r["N"] >= 1024]

    def check(label, values, ok):
        if not values:
            out.append(f"- {label}: no data")
            return
        good = all(ok(x) for x in values)
        out.append(f"- {label}: {'MET' if good else 'MISSED'} "
                   f"(min {min(values):.2f}, max {max(values):.2f})")

    check("forward >= best SDPA (N >= 1024), ratio",
          [r["summary"]["ratio_fwd"] for r in big if "ratio_fwd" in r["summary"]],
          lambda x: x >= 1.0)
    check("forward+backward >= 0.9x best SDPA (N >= 1024), ratio",
          [r["summary"]["ratio_fwdbwd"] for r in big if "ratio_fwdbwd" in r["summary"]],
          lambda x: x >= 0.9)
    check("per-query statistics overhead <= 10%",
          [r["summary"]["overhead triton+qstats"] for r in big
           if "overhead triton+qstats" in r["summary"]], lambda x: x <= 0.10)
    check("statistics incl. received-mass pass, overhead (informational)",
          [r["summary"]["overhead triton+stats"] for r in big
           if "overhead triton+stats" in r["summary"]], lambda x: True)
    if peak:
        vals = [r["summary"]["tflops"]["triton"] / peak for r in done
                if r["N"] == 4096 and r["D"] == 128 and "triton" in r["summary"]["tflops"]]
        check(f"forward N=4096 D=128 >= 50% of dense bf16 peak ({peak:.0f} TFLOP/s), fraction",
              vals, lambda x: x >= 0.5)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="also write the results: PATH.md / PATH.json (or the one suffix given)")
    p.add_argument("--budget", type=float, default=255.0,
                   help="seconds after which the remaining configs are skipped")
    p.add_argument("--smoke", action="store_true",
                   help="tiny CPU run under the Triton interpreter (checks the script only)")
    args = p.parse_args(argv)
    t_start = time.time()

    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are imported
        device, dtype, dims, seqs = "cpu", torch.float32, [16], [40, 72]
        check_n = 45
        cases = [(dtype, 16, True, True, None), (dtype, 16, False, False, None)]
    else:
        if not torch.cuda.is_available():
            log("bench_attention: no CUDA device found. This benchmark measures the Triton "
                "kernels on a GPU (H100/H200 class); run it there, or use --smoke to check the "
                "script on the CPU under the Triton interpreter.")
            return 2
        device, dtype, dims, seqs = "cuda", torch.bfloat16, [64, 128], [512, 1024, 2048, 4096]
        check_n = 300
        cases = [(dtype, 64, True, True, (64, 64)), (dtype, 128, False, True, (128, 64)),
                 (dtype, 128, True, False, None), (dtype, 64, False, False, None)]

    try:
        import triton
    except ImportError:
        log("bench_attention: triton is not importable; install triton>=3.6")
        return 2
    import tslayers.kernels.triton_attention as ta

    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)"
    peak = next((v for k, v in DENSE_BF16_PEAK_TFLOPS.items() if k in gpu), None)
    meta = dict(gpu=gpu, torch=torch.__version__, triton=triton.__version__,
                python=sys.version.split()[0], interpreted=ta.INTERPRETED,
                dtype=str(dtype).removeprefix("torch."), peak_tflops=peak)
    log("== bench_attention == " + " ".join(f"{k}={v}" for k, v in meta.items()))

    ok = correctness_check(device, check_n, cases)
    log(f"   [{time.time() - t_start:.0f}s]")

    from torch.nn.attention import SDPBackend
    sdpa_names = tuple(n for n in SDPA_BACKENDS if hasattr(SDPBackend, n))
    timer = make_timer(args.smoke)
    rows: list[dict] = []
    log("== speed (TFLOP/s; fwd+bwd counts 3.5x the forward FLOPs) ==")
    for d in dims:
        for causal in (False, True):
            for n in seqs:
                h = 2 if args.smoke else max(1, 2048 // d)  # model width 2048
                b = 1 if args.smoke else max(1, 16384 // n)  # ~16k tokens per config
                if time.time() - t_start > args.budget:
                    rows.append(dict(B=b, H=h, N=n, D=d, causal=causal,
                                     skipped="skipped (time budget)"))
                    continue
                t0 = time.time()
                try:
                    row = bench_config(timer, b, h, n, d, causal, dtype, device, sdpa_names)
                    row["summary"] = summarise(row)
                except Exception as exc:
                    row = dict(B=b, H=h, N=n, D=d, causal=causal,
                               skipped=f"error: {type(exc).__name__}: {str(exc)[:120]}")
                rows.append(row)
                s = row.get("summary", {})
                tf = s.get("tflops", {})
                log(f"  D={d} N={n} causal={causal} B={b} H={h} [{time.time() - t0:.1f}s] "
                    + " ".join(f"{k}={v:.0f}" for k, v in tf.items())
                    + (f" errors={row['errors']}" if row.get("errors") else "")
                    + (f" {row['skipped']}" if "skipped" in row else ""))
                if device == "cuda":
                    torch.cuda.empty_cache()

    lines = table(rows)
    goals = targets(rows, peak)
    log("")
    log("\n".join(lines))
    log("")
    log("targets:")
    log("\n".join(goals))
    log(f"correctness: {'PASS' if ok else 'FAIL'}; total {time.time() - t_start:.0f}s")

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
