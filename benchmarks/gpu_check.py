"""A prepared GPU check: the GPU paths that have never run, in one command of at most 8 minutes.

    make gpu-check                                   # = python benchmarks/gpu_check.py (CUDA)
    python benchmarks/gpu_check.py [--out DIR] [--budget-s 480] [--keep-work]
    python benchmarks/gpu_check.py --device cpu --small   # the CI version (tests/test_gpu_check.py)

Writes DIR/gpu_check.json (the report) and DIR/gpu_check.txt (the summary, also printed);
DIR defaults to data/gpu_check. Scratch files go to a temporary directory (--keep-work keeps it).

Phases, run in the order matmul, memory_sweep, loss_head, qwen3_tiny, testbed (the longest
last); each one records its error and the next one runs; once --budget-s is spent the
remaining phases are skipped, not run:
- `matmul`: bf16 matrix-product throughput, the anchor (8192³ on CUDA; 512³ on CPU).
- `testbed`: the CPU testbed family. `s2lpo prepare` (a short SFT: the package's SFT runs on
   the CPU whatever the machine has), then the CPU reference (a child process, CUDA hidden)
   and the target (this process, on the device), each running `s2lpo explore` (HF engine)
   and 5 `s2lpo train` steps; the target also times the HF engine on the device, trains in bf16
   (`dtype: bfloat16`), resumes a 3-step run to 5, and runs FSDP2 mixed precision
   (`distributed.param_dtype: bfloat16`) as one torchrun rank after one all-reduce on
   the backend the package picks (NCCL on CUDA, gloo on CPU). All train runs read the
   reference's bank. Step 1 has α = 1 (bank rows only, no sampling), so it is compared
   tightly; steps 2–5 sample online with each device's own RNG and are compared as
   statistics. Tolerances, |target − reference| ≤ atol + rtol·|reference|:
     fp32 on the device vs fp32 on CPU, step 1 (reward, accuracy, loss, grad norm, KL,
       entropy, clip fraction, bank tokens): rtol 1e-3, atol 1e-5
     bf16 and FSDP-bf16 on the device vs fp32 on CPU, step 1: rtol 0.1, atol 1e-2
     bank draws (G_w, bank tokens) of all 5 steps: equal
     mean reward of steps 2–5: atol 0.25 (different sampling streams)
     resumed 3 + 2 steps vs 5 straight steps on the device, steps 4–5: rtol 1e-4, atol 1e-6;
       final weights max |Δ| ≤ 1e-5 (`bitwise` says whether they are identical)
     explorer pass@1 of the device's bank vs the CPU's: atol 0.1
   `fsdp_active` says whether FSDP2 was applied: the package runs a one-process torchrun
   as a plain single process (stage2_train.distributed: WORLD_SIZE 1), so on one GPU it
   is false and that run is the fp32 run again.
- `qwen3_tiny`: a random 2-layer Qwen3 at the real vocabulary (151,936) on the vendored
   Qwen3 tokenizer: the HF engine generates on the device, then one plain-GRPO step of
   `s2lpo train` on the GSM8K sample (chat template).
- `memory_sweep`: one micro-batch-1 training step of Qwen3-0.6B's shapes (random weights,
   gradient checkpointing, a frozen reference, AdamW) at responses of 512 → 4096 tokens
   after a 200-token prompt, in float32 and bfloat16: seconds per phase (reference
   log-probs, forward + backward, optimizer) and peak CUDA memory (max_memory_allocated)
   against the package's own estimate for the same shapes (`package_memory_estimate`;
   one process, `dtype` weights and a reference copy, AdamW, gradient checkpointing).
- `loss_head`: the chunked log-prob head (stage2_train.policy.token_logprobs) against the
   plain one (benchmarks/logprob_memory.py) at vocabulary 151,936, 4 rows × 4096 tokens,
   forward with entropy + backward: peak CUDA memory above the batch, seconds, and the
   largest log-prob difference between them.

Report fields: `ok` (every phase ran and every check passed), `mode`, `device`, `env`
(versions, GPU name), `wall_s`, `phases.<name>` (`ok`, `seconds`, `error`, and the phase's
figures), `checks` (name, ok, max_abs_diff or value, tolerance). Memory fields are MiB
from torch.cuda.max_memory_allocated, or null on CPU (there is no resettable peak there);
`peak_cuda_mib` of a phase that ran on CPU under CUDA is 0.

Missing packages stop the check with one line naming the wheels to carry. The GPU machine
(Python 3.12) has torch, transformers, peft, pyarrow, typer, PyYAML, tqdm, matplotlib and
tensorboard; the package runs from this tree (no install, no wheel of it). It lacks only
math-verify (the verifier's fallback for answers that are not plain numbers) and what it
needs; datasets (hub ids only; 0.88 MB with dill and multiprocess) and dvc are never
imported here, so they are not carried. The carry list, 0.38 MB (measured: 383,479 bytes
in 3 wheels; the limit is 64 MiB):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl \\
        math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2

and on the GPU machine, before the check:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]  # the package runs from this tree

import gpu_check_runs as runs  # noqa: E402 - found through the path above

# (module, the wheel to carry when it is missing)
REQUIRED = (("torch", "torch"), ("transformers", "transformers"), ("yaml", "PyYAML"), ("typer", "typer"),
            ("pyarrow", "pyarrow"), ("safetensors", "safetensors"), ("numpy", "numpy"), ("tqdm", "tqdm"),
            ("matplotlib", "matplotlib"), ("sympy", "sympy"), ("math_verify", "math_verify-0.9.0-py3-none-any.whl"),
            ("latex2sympy2_extended", "latex2sympy2_extended-1.11.0-py3-none-any.whl"),
            ("antlr4", "antlr4_python3_runtime-4.13.2-py3-none-any.whl"))

QWEN3_06B = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)
TINY = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
SIZES = {
    "full": {"matmul": {"n": 8192, "iters": 10},
             "prepare": {"train_size": 256, "test_size": 32, "test_flawed": 8, "sft_steps": 300, "eval_samples": 4,
                         "explorer": [2, 64], "learner": [4, 128]},  # the default family's shapes
             "testbed": {"samples_per_prompt": 8, "max_new_tokens": 48, "prompts_per_step": 16, "group_size": 8,
                         "mini_batch_size": 64, "micro_batch_size": 64},
             "qwen3": {"hidden": 256, "layers": 2, "prompts": 4, "group_size": 4, "max_new_tokens": 128},
             "sweep": {"config": QWEN3_06B, "prompt_tokens": 200, "lengths": [512, 1024, 2048, 4096]},
             "loss_head": {"rows": 4, "length": 4096}},
    "small": {"matmul": {"n": 512, "iters": 3},
              "prepare": {"train_size": 32, "test_size": 8, "test_flawed": 2, "sft_steps": 10, "eval_samples": 1,
                          "explorer": [1, 64], "learner": [2, 64]},
              "testbed": {"samples_per_prompt": 4, "max_new_tokens": 16, "prompts_per_step": 4, "group_size": 4,
                          "mini_batch_size": 8, "micro_batch_size": 8},
              "qwen3": {"hidden": 64, "layers": 1, "prompts": 2, "group_size": 2, "max_new_tokens": 8},
              "sweep": {"config": TINY, "prompt_tokens": 8, "lengths": [16, 32]},
              "loss_head": {"rows": 1, "length": 64}},
}


def missing_wheels(required=REQUIRED) -> list[str]:
    return [wheel for module, wheel in required if importlib.util.find_spec(module) is None]


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_memory_estimate(config: dict, *, prompt_tokens: int, response_tokens: int, micro_batch: int = 1,
                            gpus: int = 1, dtype: str = "float32") -> dict[str, float]:
    """The package's own per-GPU estimate (pipeline.memory, GB = 1e9 bytes, by term) of the
    learner's training phase for the shapes the sweep measures: one process, `dtype` weights
    and a frozen reference copy, AdamW, gradient checkpointing, `micro_batch` rows of
    prompt + response tokens. The CUDA-context term is left out: `max_memory_allocated`
    does not count it."""
    from pipeline import memory as mem

    arch = mem.Arch.from_config({"model_type": "qwen3", **config})  # the sweep builds Qwen3 models
    settings = mem.LearnerSettings(
        dtype=dtype, param_dtype=None, fsdp=False, lora_r=0, lora_params=0, reference=True,
        gradient_checkpointing=True, micro_batch=micro_batch, row_tokens=prompt_tokens + response_tokens,
        engine_vllm=False, vllm=mem.VllmSettings(share=0.0, dtype=None), hf_batch=micro_batch,
        rows_per_rank=micro_batch)
    train = mem.train_phases(arch, mem.parameter_counts(arch), settings, mem.GpuSpec(gpus, 141.0))[0]
    return {t.label: t.gb for t in train.terms if not t.label.startswith("CUDA context")}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device: str) -> int | None:
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_mib(device: str, base: int | None = 0) -> float | None:
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - (base or 0)) / 2**20


def matmul_anchor(device: str, n: int, iters: int) -> dict:
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    seconds = (time.perf_counter() - t0) / iters
    return {"dtype": "bfloat16", "n": n, "seconds_per_product": seconds, "tflops": 2 * n**3 / seconds / 1e12}


def _batch(prompt_tokens: int, response_tokens: int, vocab: int, device: str, rows: int = 1):
    import torch

    from stage2_train.policy import Packed

    width = prompt_tokens + response_tokens
    ids = torch.randint(0, vocab, (rows, width), device=device)
    resp = torch.zeros(rows, width - 1, device=device)
    resp[:, prompt_tokens - 1:] = 1.0
    return Packed(ids, torch.ones_like(ids), resp, torch.zeros_like(resp), torch.zeros(rows, dtype=torch.bool))


def _sweep_one(device: str, config: dict, dtype: str, prompt_tokens: int, lengths: list[int]) -> list[dict]:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from stage2_train.policy import batched_logprobs, token_logprobs

    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(Qwen3Config(**config)).to(getattr(torch, dtype))
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    rows = []
    for i, length in enumerate([lengths[0], *lengths]):  # the first is a warm-up: Adam states, kernels
        batch = _batch(prompt_tokens, length, config["vocab_size"], device)
        _peak_reset(device)
        t = [time.perf_counter()]
        old = batched_logprobs(ref, batch, 1)
        _sync(device)
        t.append(time.perf_counter())
        logp, _ = token_logprobs(model, batch, with_entropy=True)
        mask = batch.response_mask
        loss = -((logp - old).exp() * mask).sum() / mask.sum()
        loss.backward()
        _sync(device)
        t.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t.append(time.perf_counter())
        if i == 0:
            continue
        peak = _peak_mib(device)
        est = package_memory_estimate(config, prompt_tokens=prompt_tokens, response_tokens=length, dtype=dtype)
        est_mib = sum(est.values()) * 1e9 / 2**20
        rows.append({"response_tokens": length, "tokens": prompt_tokens + length, "ref_logprobs_s": t[1] - t[0],
                     "forward_backward_s": t[2] - t[1], "optimizer_s": t[3] - t[2], "step_s": t[3] - t[0],
                     "peak_cuda_mib": peak, "estimate_mib": est_mib,
                     "measured_over_estimate": None if peak is None else peak / est_mib,
                     "loss_finite": bool(torch.isfinite(loss).item())})
    del model, ref, opt
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def memory_sweep(device: str, config: dict, prompt_tokens: int, lengths: list[int]) -> dict:
    est = package_memory_estimate(config, prompt_tokens=prompt_tokens, response_tokens=lengths[-1])
    return {"config": config, "micro_batch": 1, "prompt_tokens": prompt_tokens, "gradient_checkpointing": True,
            "estimator": "pipeline.memory.train_phases: one process, dtype weights + reference, AdamW, gradient checkpointing, micro-batch 1",
            "estimate_items_gb_at_longest": est,
            "runs": {dtype: _sweep_one(device, config, dtype, prompt_tokens, lengths)
                     for dtype in ("float32", "bfloat16")}}


def loss_head(device: str, rows: int, length: int, vocab: int = 151936) -> dict:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from stage2_train.policy import token_logprobs

    plain = load_module(ROOT / "benchmarks" / "logprob_memory.py").plain_token_logprobs
    out = {"rows": rows, "length": length, "vocab": vocab}
    for dtype in ("bfloat16", "float32"):
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen3ForCausalLM(Qwen3Config(**{**TINY, "vocab_size": vocab})).to(getattr(torch, dtype))
        batch = _batch(1, length - 1, vocab, device, rows=rows)
        variants = {"plain": lambda: plain(model, batch.input_ids),
                    "chunked": lambda: token_logprobs(model, batch, with_entropy=True)}
        res, logps = {}, {}
        for name, fn in variants.items():
            best = float("inf")
            for _ in range(2):  # the second run is timed without first-call overheads
                model.zero_grad(set_to_none=True)
                base = _peak_reset(device)
                t0 = time.perf_counter()
                logp, entropy = fn()
                logp.sum().backward()
                _sync(device)
                best = min(best, time.perf_counter() - t0)
                peak = _peak_mib(device, base)
            logps[name] = logp.detach().float()
            res[name] = {"seconds": best, "peak_cuda_mib": peak, "entropy_finite": bool(torch.isfinite(entropy).all())}
            del logp, entropy
        res["max_abs_logprob_diff"] = float((logps["plain"] - logps["chunked"]).abs().max())
        p, c = res["plain"]["peak_cuda_mib"], res["chunked"]["peak_cuda_mib"]
        res["memory_ratio_chunked_over_plain"] = None if p is None else c / p
        out[dtype] = res
        del model, logps
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def testbed(work: Path, sizes: dict, deadline: float) -> dict:
    """`s2lpo prepare`, then the CPU reference (a child process) and the target (here)."""
    import yaml

    prep = sizes["prepare"]

    def member(layers: int, hidden: int, seed: int) -> dict:
        return {"layers": layers, "hidden": hidden, "sft_steps": prep["sft_steps"], "seed": seed}

    section = {"out_dir": str(work / "family"), "train_size": prep["train_size"], "test_size": prep["test_size"],
               "test_flawed": prep["test_flawed"], "eval_samples": prep["eval_samples"],
               "explorer": member(*prep["explorer"], 1), "learner": member(*prep["learner"], 2)}
    params = work / "prepare.yaml"
    params.write_text(yaml.safe_dump({"prepare": section}))
    t0 = time.perf_counter()
    runs.run_bounded(["-m", "pipeline.cli", "prepare", "--params", str(params)], cpu=True, deadline=deadline)
    family = json.loads((work / "family" / "passk.json").read_text())
    out = {"prepare": {"seconds": time.perf_counter() - t0, "device": "cpu", "sft_steps": prep["sft_steps"],
                       "pass_at_1": {m: family[m]["pass_at_k"]["all"]["1"] for m in ("explorer", "learner")}}}
    result = work / "reference.json"  # the CPU reference: a child process that cannot see the GPU
    runs.run_bounded([str(Path(__file__)), "--child", "reference", json.dumps(sizes["testbed"]), str(work), str(result),
                      str(deadline)], cpu=True, deadline=deadline)
    out["reference"] = json.loads(result.read_text())
    out["target"] = runs.testbed_role("target", sizes["testbed"], work, deadline)
    return out


def run_phases(args, work: Path) -> dict:
    sizes = SIZES["small" if args.small else "full"]
    start = time.time()
    deadline = start + args.budget_s
    # the short GPU measurements first, the testbed (the longest) last
    phases = {"matmul": lambda: matmul_anchor(args.device, **sizes["matmul"]),
              "memory_sweep": lambda: memory_sweep(args.device, **sizes["sweep"]),
              "loss_head": lambda: loss_head(args.device, **sizes["loss_head"]),
              "qwen3_tiny": lambda: runs.qwen3_tiny(sizes["qwen3"], work),
              "testbed": lambda: testbed(work, sizes, deadline)}
    report = {}
    for name, fn in phases.items():
        if time.time() > deadline:
            report[name] = {"ok": False, "seconds": 0.0, "error": f"skipped: the {args.budget_s:.0f} s budget is spent"}
            continue
        t0 = time.perf_counter()
        try:
            report[name] = {**fn(), "ok": True, "error": None}
        except Exception as exc:  # noqa: BLE001 - one failed phase must not cost the lease the others
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        report[name]["seconds"] = time.perf_counter() - t0
        print(f"[gpu-check] {name}: {'ok' if report[name]['ok'] else report[name]['error']} "
              f"({report[name]['seconds']:.1f} s)", flush=True)
    return report


def environment(device: str) -> dict:
    import platform

    import torch
    import transformers

    cuda = device == "cuda"
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda if cuda else None,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_mib": torch.cuda.get_device_properties(0).total_memory / 2**20 if cuda else None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--small", action="store_true", help="CI sizes (seconds on a CPU)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "gpu_check")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="phases not started by then are skipped (default 480; 1800 with --small: loaded CI hosts)")
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch directory (printed)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.budget_s = args.budget_s or (1800.0 if args.small else 480.0)
    if args.child:
        if args.child[0] == "torchrun-train":
            runs.torchrun_child(*args.child[1:])
        else:
            runs.child(args.child[0], *args.child[1:4], float(args.child[4]))
        return 0
    if missing := missing_wheels():
        sys.exit(f"error: missing Python packages; carry the wheels {', '.join(missing)} "
                 "(the pip download command is in benchmarks/gpu_check.py's docstring)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device; run on a GPU machine or pass "
                 "--device cpu --small")
    from gpu_check_report import build_report, summary

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t0 = time.perf_counter()
    try:
        phases = run_phases(args, work)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    report = build_report(phases, mode="small" if args.small else "full", device=args.device,
                          env=environment(args.device), wall_s=time.perf_counter() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = summary(report)
    (args.out / "gpu_check.txt").write_text(text + "\n")
    print(text)
    if args.keep_work:
        print(f"scratch files kept in {work}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
