"""Where `s2lpo prepare`'s time goes: SFT step and evaluation cost of each member, extrapolated.

Times `--steps` SFT steps of each member (on 1 and 2 threads) and its pass@k evaluation on
`--problems` test problems × `--samples` samples, then projects the default recipe
(params.yaml `prepare`): SFT steps × step time, and the evaluation scaled to 256 problems
× `eval_samples`. The schedule of `_train_members` is modelled: the explorer (SFT then
eval) on one thread, then the learner on two.

    python benchmarks/prepare_phases.py --steps 20 --problems 16 --samples 64
"""

from __future__ import annotations

import argparse
import json
import time


def _member_times(recipe, cfg, steps: int, problems, samples: int, threads: int) -> dict:
    import torch

    from pipeline.engines import SamplingParams
    from pipeline.engines.hf import HFEngine
    from pipeline.sample_score import correct_counts
    from pipeline.testbed import task
    from pipeline.testbed.model import ModelShape, build_model
    from pipeline.testbed.sft import train_sft
    from pipeline.testbed.tokenizer import build_char_tokenizer

    torch.set_num_threads(threads)
    tok = build_char_tokenizer()
    model = build_model(ModelShape(recipe.layers, recipe.hidden), tok, seed=recipe.seed)
    t0 = time.perf_counter()
    train_sft(model, tok, steps=steps, settings=cfg.sft, spec=cfg.task, seed=recipe.seed)
    sft = (time.perf_counter() - t0) / steps
    params = SamplingParams(n=samples, temperature=1.0, max_new_tokens=cfg.eval_max_new_tokens, seed=0)
    t0 = time.perf_counter()
    correct_counts(HFEngine(model, tok), tok, problems, params, template=task.QUESTION_TEMPLATE)
    return {"sft_step_s": round(sft, 4), "eval_s_per_problem": round((time.perf_counter() - t0) / len(problems), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--samples", type=int, default=64)
    args = ap.parse_args()
    from pipeline.config import load_stage_config
    from pipeline.testbed.build import make_splits
    from pipeline.testbed.config import PrepareConfig

    cfg = load_stage_config(PrepareConfig, "prepare")
    _, test = make_splits(cfg)
    probe = test[: args.problems]
    t = {(m, th): _member_times(getattr(cfg, m), cfg, args.steps, probe, args.samples, th)
         for m in ("explorer", "learner") for th in (1, 2)}
    scale = len(test) * cfg.eval_samples / args.samples  # problems × samples of the real evaluation
    explorer_s = cfg.explorer.sft_steps * t["explorer", 1]["sft_step_s"]
    explorer_eval = scale * t["explorer", 1]["eval_s_per_problem"]
    learner_s = cfg.learner.sft_steps * t["learner", 2]["sft_step_s"]
    learner_eval = scale * t["learner", 2]["eval_s_per_problem"]
    report = {"measured": {f"{m}@{th}": v for (m, th), v in t.items()},
              "projected_s": {"explorer_sft": round(explorer_s), "explorer_eval": round(explorer_eval),
                              "learner_sft": round(learner_s), "learner_eval": round(learner_eval),
                              "prepare_wall": round(explorer_s + explorer_eval + learner_s + learner_eval)}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
