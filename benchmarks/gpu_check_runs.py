"""The stage runs of benchmarks/gpu_check.py: the testbed family and a tiny Qwen3 on the real tokenizer.

Everything here goes through the stages' public entry points — `load_stage_config` (what
the CLI builds its configs with), `run_explore`, `run_train`, `bank_info`, the HF engine —
in this process, so that peak CUDA memory can be read phase by phase. gpu_check.py runs
the CPU reference in a subprocess with CUDA hidden (CUDA_VISIBLE_DEVICES="", `child()`),
the target and the tiny Qwen3 in its own process, and the bf16 FSDP run under torchrun.

What a role runs (the shared bank is the reference's, so the train runs of both devices
read the same rows):
- reference: explore (its bank is the shared bank), train `fp32` (5 steps).
- target: explore (its own bank, compared as statistics), the HF engine on the device,
  train `fp32`, `resume` (3 steps, then --resume to 5; equal to `fp32`), `bf16` (dtype
  bfloat16), and `fsdp-bf16` (torchrun, one rank, FSDP2 mixed precision).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# per-step metrics compared between runs (stage2_train.step's stats)
COMPARED = ("reward", "accuracy", "loss", "grad_norm", "kl", "entropy", "clip_fraction", "g_w", "g_s",
            "zero_variance_groups", "tokens/bank", "tokens/online")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextmanager
def measured(record: dict):
    """Wall seconds and peak CUDA memory (MiB, `max_memory_allocated`; None without CUDA) of the block."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    yield
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    record["seconds"] = time.perf_counter() - t0
    record["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def write_params(path: Path, sections: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


def train_section(sizes: dict, work: Path, name: str, **changes) -> dict:
    """The testbed `train` section of run `name`: α linear from 1 to 0 over the 5 steps
    (t_mix 5: α = 1, .75, .5, .25, 0), so step 1 is bank rows only and needs no sampling."""
    section = {"prompts": str(work / "family" / "train.jsonl"), "learner": str(work / "family" / "learner"),
               "bank": str(work / "bank-reference"), "out_dir": str(work / "runs" / name), "seed": 0, "steps": 5,
               "prompts_per_step": sizes["prompts_per_step"], "group_size": sizes["group_size"],
               "max_new_tokens": sizes["max_new_tokens"], "mini_batch_size": sizes["mini_batch_size"],
               "micro_batch_size": sizes["micro_batch_size"], "anneal": {"schedule": "linear", "t_mix": 5},
               "engine": "hf", "checkpoint_every": 3, "tensorboard": False, "eval": {"every": 0, "problems": None}}
    section.update(changes)
    return section


def read_metrics(out_dir: str) -> list[dict]:
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("step", 0) >= 1]


def step_times(records: list[dict]) -> dict:
    """Mean seconds per step of each `time/*` phase (host timers: CUDA work is charged to
    the phase that waits for it), over all steps and over steps ≥ 2 (no first-step warm-up)."""
    keys = sorted({k for r in records for k in r if k.startswith("time/")})

    def mean(rows, k):
        vals = [r[k] for r in rows if k in r]
        return sum(vals) / len(vals) if vals else None

    later = records[1:] or records
    return {k[5:]: {"mean_s": mean(records, k), "mean_s_after_first": mean(later, k)} for k in keys}


def run_train_here(params: Path, *, resume: bool = False) -> dict:
    from pipeline.config import load_stage_config
    from stage2_train.config import TrainConfig
    from stage2_train.trainer import run_train

    cfg = load_stage_config(TrainConfig, "train", params_path=params)
    lines: list[str] = []
    rec: dict = {}
    with measured(rec):
        run_train(cfg, resume=resume, echo=lambda *a: lines.append(" ".join(map(str, a))), progress=False)
    records = read_metrics(cfg.out_dir)
    rec.update(used_cuda=None if rec["peak_cuda_mib"] is None else rec["peak_cuda_mib"] > 0,
               steps=len(records), dtype=cfg.dtype, metrics=[{k: r.get(k) for k in COMPARED} for r in records],
               step_times=step_times(records), fsdp_active=any(" ranks (fsdp)" in line for line in lines),
               model=str(Path(cfg.out_dir) / "model"))
    return rec


def run_explore_here(params: Path) -> dict:
    from pipeline.bank.inspect import bank_info
    from pipeline.bank.reader import BankReader
    from pipeline.config import load_stage_config
    from stage1_explore.config import ExploreConfig
    from stage1_explore.explore import run_explore

    cfg = load_stage_config(ExploreConfig, "explore", params_path=params)
    rec: dict = {}
    with measured(rec):
        done = run_explore(cfg, echo=lambda *_: None)
    info = bank_info(BankReader.open(cfg.bank))
    rec.update(used_cuda=None if rec["peak_cuda_mib"] is None else rec["peak_cuda_mib"] > 0, rows=info["rows"],
               pass_at_1=info["pass_at_k"]["1"], mean_response_tokens=info["mean_response_tokens"],
               tokens=done.get("tokens"), engine=str(cfg.engine.value))
    return rec


def hf_engine_speed(model_dir: str, prompts: list[str], *, n: int, max_new_tokens: int, rounds: int = 2) -> dict:
    """The package's HF engine on a model moved to this process's device (cuda:0 when present)."""
    import torch

    from pipeline.engines import SamplingParams
    from pipeline.engines.hf import HFEngine
    from pipeline.models import load_causal_lm, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, dtype="float32").to(device).eval()
    ids = tok(prompts, add_special_tokens=True)["input_ids"]
    engine = HFEngine(model, tok, batch_size=4096)
    best, tokens = float("inf"), 0
    for r in range(rounds):  # the first round includes CUDA start-up
        rec: dict = {}
        with measured(rec):
            out = engine.generate(ids, SamplingParams(n=n, temperature=0.7, top_p=0.95, max_new_tokens=max_new_tokens,
                                                      seed=r))
        tokens = sum(len(c.token_ids) for group in out for c in group)
        best = min(best, rec["seconds"])
    return {"device": device, "sequences": len(ids) * n, "tokens": tokens, "seconds": best,
            "tokens_per_s": tokens / best, "peak_cuda_mib": rec["peak_cuda_mib"]}


def attempt(fn) -> dict:
    """fn()'s record, or {"error": ...}: one failed run must not lose the phase's other runs."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the record, and its check fails
        return {"error": f"{type(exc).__name__}: {exc}"}


def weights_max_abs_diff(a: str, b: str) -> float:
    """max |Δ| over all tensors of two saved models (inf when their keys differ)."""
    from safetensors.torch import load_file

    ta, tb = load_file(str(Path(a) / "model.safetensors")), load_file(str(Path(b) / "model.safetensors"))
    if set(ta) != set(tb):
        return float("inf")
    return max(float((ta[k].float() - tb[k].float()).abs().max()) for k in ta)


def run_bounded(args: list[str], *, deadline: float, cpu: bool = False) -> None:
    """Run `python ARGS` from the repo root until `deadline` (epoch seconds); past it, the
    whole process group is killed (a torchrun launcher and its worker alike). `cpu` hides CUDA."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"{' '.join(args[:3])}: still running at the time budget's end; killed") from None
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(args[:3])} exited {proc.returncode}: {' | '.join(tail)}")


def torchrun_train(params: Path, result: Path, deadline: float) -> dict:
    """`run_train` as rank 0 of a one-process torchrun; the child first checks one
    all-reduce on the backend the package would pick (NCCL on CUDA, gloo on CPU)."""
    run_bounded(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                 str(Path(__file__).with_name("gpu_check.py")), "--child", "torchrun-train", str(params), str(result)],
                deadline=deadline)
    return json.loads(result.read_text())


def torchrun_child(params: str, result: str) -> None:
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    t = torch.ones(4, device=device)
    dist.all_reduce(t)
    collective_ok = bool((t == dist.get_world_size()).all())
    dist.destroy_process_group()
    rec = run_train_here(Path(params))
    rec.update(backend=backend, all_reduce_ok=collective_ok, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    Path(result).write_text(json.dumps(rec))


def testbed_role(role: str, sizes: dict, work: Path, deadline: float) -> dict:
    """One device's share of the testbed phases (module docstring); returns its records."""
    bank = work / ("bank-reference" if role == "reference" else "bank-target")
    explore = {"prompts": str(work / "family" / "train.jsonl"), "explorer": str(work / "family" / "explorer"),
               "bank": str(bank), "samples_per_prompt": sizes["samples_per_prompt"],
               "max_new_tokens": sizes["max_new_tokens"], "engine": "hf", "scoring_workers": 0, "seed": 0}
    out: dict = {"device": "cuda" if cuda_available() else "cpu"}
    out["explore"] = run_explore_here(write_params(work / f"explore-{role}.yaml", {"explore": explore}))
    params = {name: write_params(work / f"train-{role}-{name}.yaml",
                                 {"train": train_section(sizes, work, f"{role}-{name}", **kw)})
              for name, kw in [("fp32", {}), ("resume", {}), ("bf16", {"dtype": "bfloat16"}),
                               ("fsdp-bf16", {"distributed": {"strategy": "fsdp", "param_dtype": "bfloat16"}})]}
    out["train"] = {"fp32": run_train_here(params["fp32"])}
    if role == "reference":
        return out
    from pipeline.data import load_problems
    from pipeline.models import load_tokenizer
    from pipeline.prompts import render_prompts

    problems = load_problems(explore["prompts"])
    texts = render_prompts(load_tokenizer(explore["explorer"]), [p.question for p in problems], template="{question}=")
    out["hf_engine"] = attempt(lambda: hf_engine_speed(explore["explorer"], texts, n=sizes["samples_per_prompt"],
                                                       max_new_tokens=sizes["max_new_tokens"]))

    def resume() -> dict:
        first = {"train": train_section(sizes, work, f"{role}-resume", steps=3)}
        part = run_train_here(write_params(work / f"train-{role}-resume-3.yaml", first))
        whole = run_train_here(params["resume"], resume=True)
        return {**whole, "first_part": {k: part[k] for k in ("seconds", "steps", "peak_cuda_mib")},
                "weights_max_abs_diff_vs_fp32": weights_max_abs_diff(out["train"]["fp32"]["model"], whole["model"])}

    out["train"]["resume"] = attempt(resume)
    out["train"]["bf16"] = attempt(lambda: run_train_here(params["bf16"]))
    out["train"]["fsdp-bf16"] = attempt(lambda: torchrun_train(params["fsdp-bf16"], work / f"torchrun-{role}.json",
                                                               deadline))
    return out


def qwen3_tiny(sizes: dict, work: Path) -> dict:
    """A random Qwen3 of the real vocabulary (151,936) on the real tokenizer: the HF engine
    generates, then one plain-GRPO step of `s2lpo train` on the GSM8K sample."""
    import lzma
    import shutil

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    src = ROOT / "tests" / "fixtures" / "qwen3-tokenizer"
    model_dir = work / "qwen3-tiny"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "tokenizer.json").write_bytes(lzma.decompress((src / "tokenizer.json.xz").read_bytes()))
    shutil.copy(src / "tokenizer_config.json", model_dir / "tokenizer_config.json")
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=151936, hidden_size=sizes["hidden"], intermediate_size=2 * sizes["hidden"],
                      num_hidden_layers=sizes["layers"], num_attention_heads=4, num_key_value_heads=2,
                      head_dim=sizes["hidden"] // 4, tie_word_embeddings=True, bos_token_id=151643,
                      eos_token_id=151645, pad_token_id=151643)
    model = Qwen3ForCausalLM(cfg)
    model.save_pretrained(model_dir, safe_serialization=True)
    from pipeline.data import load_problems
    from pipeline.models import load_tokenizer
    from pipeline.prompts import render_prompts

    gsm8k = ROOT / "tests" / "fixtures" / "gsm8k_sample.jsonl"
    tok = load_tokenizer(str(model_dir))
    questions = [p.question for p in load_problems(str(gsm8k), limit=sizes["prompts"])]
    texts = render_prompts(tok, questions, template="chat")
    out = {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": cfg.vocab_size,
           "generate": hf_engine_speed(str(model_dir), texts, n=sizes["group_size"],
                                       max_new_tokens=sizes["max_new_tokens"])}
    section = {"prompts": str(gsm8k), "learner": str(model_dir), "template": "chat", "bank": None,
               "out_dir": str(work / "runs" / "qwen3-tiny"), "steps": 1, "prompts_per_step": sizes["prompts"],
               "group_size": sizes["group_size"], "max_new_tokens": sizes["max_new_tokens"], "lr": 1e-5,
               "anneal": {"schedule": "constant", "initial_rate": 0.0}, "mini_batch_size": 64, "micro_batch_size": 1,
               "engine": "hf", "tensorboard": False, "eval": {"every": 0, "problems": None}}
    out["train_step"] = run_train_here(write_params(work / "train-qwen3-tiny.yaml", {"train": section}))
    return out


def child(role: str, sizes_json: str, work: str, result: str, deadline: float) -> None:
    rec = testbed_role(role, json.loads(sizes_json), Path(work), deadline)
    Path(result).write_text(json.dumps(rec))
