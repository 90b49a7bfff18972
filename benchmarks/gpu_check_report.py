"""The checks and the text summary of benchmarks/gpu_check.py's report (pure: dicts in, dicts and text out).

Tolerances are those of gpu_check.py's docstring: |target − reference| ≤ atol + rtol·|reference|.
"""

from __future__ import annotations

import math

STEP1_KEYS = ("reward", "accuracy", "loss", "grad_norm", "kl", "entropy", "clip_fraction", "tokens/bank")
FP32 = {"rtol": 1e-3, "atol": 1e-5}
BF16 = {"rtol": 0.1, "atol": 1e-2}
RESUME = {"rtol": 1e-4, "atol": 1e-6}
ONLINE_REWARD_ATOL = 0.25
EXPLORER_PASS1_ATOL = 0.1
RESUME_WEIGHTS_ATOL = 1e-5
LOGPROB_ATOL = 1e-3


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def compare(target: list[dict], reference: list[dict], steps: list[int], keys, *, rtol: float, atol: float) -> dict:
    """The worst excess over the tolerance among `keys` at 1-based `steps`; missing or
    non-finite values fail."""
    worst, excess, where, ok = 0.0, -math.inf, None, True
    for step in steps:
        for key in keys:
            a, b = target[step - 1].get(key), reference[step - 1].get(key)
            if a is None and b is None:
                continue
            if not (_finite(a) and _finite(b)):
                ok, where = False, f"step {step} {key}: {a} vs {b}"
                continue
            diff = abs(a - b)
            over = diff - (atol + rtol * abs(b))
            worst = max(worst, diff)
            if over > excess:
                excess, where = over, f"step {step} {key}: {a:.6g} vs {b:.6g}"
    return {"ok": ok and excess <= 0, "max_abs_diff": worst, "worst": where, "rtol": rtol, "atol": atol}


def _resume_check(target: dict) -> dict:
    res = compare(target["resume"]["metrics"], target["fp32"]["metrics"], [4, 5],
                  ("reward", "loss", "grad_norm", "kl", "entropy", "clip_fraction", "tokens/online"), **RESUME)
    w = target["resume"]["weights_max_abs_diff_vs_fp32"]
    res.update(weights_max_abs_diff=w, bitwise=w == 0.0 and res["max_abs_diff"] == 0.0,
               ok=res["ok"] and _finite(w) and w <= RESUME_WEIGHTS_ATOL)
    return res


def testbed_checks(tb: dict) -> dict:
    """Each check on its own: a run that failed (an `error` record, no metrics) fails its checks only."""
    ref = lambda: tb["reference"]["train"]["fp32"]["metrics"]
    target = tb["target"]["train"]
    fp32 = lambda: target["fp32"]["metrics"]
    makers = {
        "testbed/fp32 step 1 vs CPU": lambda: compare(fp32(), ref(), [1], STEP1_KEYS, **FP32),
        "testbed/bank draws of steps 1-5": lambda: compare(fp32(), ref(), [1, 2, 3, 4, 5], ("g_w", "tokens/bank"),
                                                           rtol=0.0, atol=0.0),
        "testbed/mean reward of steps 2-5": lambda: compare(fp32(), ref(), [2, 3, 4, 5], ("reward",), rtol=0.0,
                                                            atol=ONLINE_REWARD_ATOL),
        "testbed/bf16 step 1 vs CPU fp32": lambda: compare(target["bf16"]["metrics"], ref(), [1], STEP1_KEYS, **BF16),
        "testbed/fsdp-bf16 step 1 vs CPU fp32": lambda: compare(target["fsdp-bf16"]["metrics"], ref(), [1],
                                                                STEP1_KEYS, **BF16),
        "testbed/resume 3+2 vs 5 steps": lambda: _resume_check(target),
        "testbed/explorer pass@1 vs CPU": lambda: _within(tb["target"]["explore"]["pass_at_1"],
                                                          tb["reference"]["explore"]["pass_at_1"], EXPLORER_PASS1_ATOL),
        "testbed/all-reduce on one rank": lambda: {"ok": bool(target["fsdp-bf16"]["all_reduce_ok"]),
                                                   "backend": target["fsdp-bf16"]["backend"]},
    }
    checks = {}
    for name, make in makers.items():
        try:
            checks[name] = make()
        except (KeyError, IndexError, TypeError) as exc:  # the run failed or wrote fewer steps
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return checks


def _within(a: float, b: float, atol: float) -> dict:
    return {"ok": abs(a - b) <= atol, "max_abs_diff": abs(a - b), "atol": atol}


def other_checks(phases: dict) -> dict:
    checks = {}
    if phases["qwen3_tiny"]["ok"]:
        q = phases["qwen3_tiny"]
        step = q["train_step"]["metrics"][0]
        checks["qwen3_tiny/generate and train"] = {"ok": q["generate"]["tokens"] > 0 and _finite(step["loss"])
                                                   and _finite(step["entropy"]), "tokens": q["generate"]["tokens"]}
    if phases["memory_sweep"]["ok"]:
        rows = [r for runs in phases["memory_sweep"]["runs"].values() for r in runs]
        checks["memory_sweep/finite losses"] = {"ok": all(r["loss_finite"] for r in rows)}
    if phases["loss_head"]["ok"]:
        lh = phases["loss_head"]
        for dtype in ("bfloat16", "float32"):
            r = lh[dtype]
            mem = r["memory_ratio_chunked_over_plain"]
            checks[f"loss_head/{dtype} chunked = plain"] = {
                "ok": r["max_abs_logprob_diff"] <= LOGPROB_ATOL and (mem is None or mem < 1.0)
                and r["chunked"]["entropy_finite"], "max_abs_diff": r["max_abs_logprob_diff"], "atol": LOGPROB_ATOL,
                "memory_ratio": mem}
    return checks


def build_report(phases: dict, *, mode: str, device: str, env: dict, wall_s: float) -> dict:
    checks = {}
    if phases["testbed"]["ok"]:
        checks.update(testbed_checks(phases["testbed"]))
    checks.update(other_checks(phases))
    ok = all(p["ok"] for p in phases.values()) and all(c["ok"] for c in checks.values())
    return {"schema": 1, "ok": ok, "mode": mode, "device": device, "env": env, "wall_s": wall_s,
            "phases": phases, "checks": [{"name": k, **v} for k, v in checks.items()]}


def _mib(x) -> str:
    return "n/a" if x is None else f"{x:,.0f} MiB"


def summary(report: dict) -> str:
    env, ph = report["env"], report["phases"]
    lines = [f"gpu-check ({report['mode']}, {report['device']}): {'OK' if report['ok'] else 'FAILED'} in "
             f"{report['wall_s']:.0f} s — torch {env['torch']}, transformers {env['transformers']}, "
             f"{env['gpu'] or 'no GPU'}, Python {env['python']}"]
    for name, p in ph.items():
        lines.append(f"  {name:<13} {'ok' if p['ok'] else 'FAILED: ' + str(p['error'])}  ({p['seconds']:.1f} s)")
    if ph["matmul"]["ok"]:
        m = ph["matmul"]
        lines.append(f"matmul: bf16 {m['n']}³ at {m['tflops']:.4g} TFLOP/s")
    if ph["testbed"]["ok"]:
        tb = ph["testbed"]
        ex, hf = tb["target"]["explore"], tb["target"]["hf_engine"]
        lines.append(f"testbed: prepare {tb['prepare']['seconds']:.0f} s on CPU (pass@1 {tb['prepare']['pass_at_1']}); "
                     f"s2lpo explore {ex['seconds']:.1f} s, bank pass@1 {ex['pass_at_1']:.3f}, "
                     f"peak {_mib(ex['peak_cuda_mib'])}")
        if "error" not in hf:
            lines.append(f"  HF engine on {hf['device']}: {hf['tokens_per_s']:,.0f} tokens/s "
                         f"({hf['sequences']} sequences)")
        for name, run in tb["target"]["train"].items():
            if "error" in run:
                lines.append(f"  train {name:<10} FAILED: {run['error']}")
                continue
            st, m1 = run["step_times"].get("step", {}), run["metrics"][0]
            lines.append(f"  train {name:<10} {st.get('mean_s_after_first') or 0:.3f} s/step after the first, "
                         f"peak {_mib(run['peak_cuda_mib'])}, fsdp_active {run['fsdp_active']}; step 1 reward "
                         f"{m1['reward']:.3f}, grad norm {m1['grad_norm']:.3g}, zero-variance groups "
                         f"{m1['zero_variance_groups']:.2f}")
    if ph["qwen3_tiny"]["ok"]:
        q = ph["qwen3_tiny"]
        g, t = q["generate"], q["train_step"]
        lines.append(f"qwen3 tiny ({q['parameters'] / 1e6:.1f}M parameters, vocabulary {q['vocab_size']:,}): "
                     f"HF engine on {g['device']} {g['tokens_per_s']:,.0f} tokens/s; "
                     f"one train step {t['step_times']['step']['mean_s']:.2f} s, "
                     f"peak {_mib(t['peak_cuda_mib'])}")
    if ph["memory_sweep"]["ok"]:
        lines.append("memory sweep (micro-batch 1, measured peak vs the package's estimate):")
        for dtype, rows in ph["memory_sweep"]["runs"].items():
            for r in rows:
                ratio = r["measured_over_estimate"]
                lines.append(f"  {dtype:<8} {r['response_tokens']:>5} tokens  step {r['step_s']:.3f} s  "
                             f"peak {_mib(r['peak_cuda_mib'])}  estimate {_mib(r['estimate_mib'])}"
                             + ("" if ratio is None else f"  ratio {ratio:.2f}"))
    if ph["loss_head"]["ok"]:
        lh = ph["loss_head"]
        for dtype in ("bfloat16", "float32"):
            r = lh[dtype]
            lines.append(f"loss head {dtype} {lh['rows']}×{lh['length']}: plain {r['plain']['seconds']:.3f} s "
                         f"{_mib(r['plain']['peak_cuda_mib'])}, chunked {r['chunked']['seconds']:.3f} s "
                         f"{_mib(r['chunked']['peak_cuda_mib'])}, max |Δ log p| {r['max_abs_logprob_diff']:.2e}")
    for c in report["checks"]:
        detail = c.get("error") or c.get("worst") or ""
        lines.append(f"check {'ok  ' if c['ok'] else 'FAIL'} {c['name']}"
                     + (f"  max |Δ| {c['max_abs_diff']:.3g}" if _finite(c.get("max_abs_diff")) else "")
                     + (f"  ({detail})" if detail and not c["ok"] else ""))
    return "\n".join(lines)
