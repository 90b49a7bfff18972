"""Can the learner's SFT, ~90% of `s2lpo prepare`, be shorter without weakening the family?

Trains one member recipe exactly as `s2lpo prepare` does (`pipeline.testbed.sft.train_sft` on
the default family's task, the held-out test problems excluded, the default `sft` block with
`--bs`/`--lr`/`--warmup` replacing its fields, as `prepare.learner.batch_size` / `.lr` do) and
prints one JSON line: the SFT wall time and pass@1 at T = 1.0 with `--n` samples on the 256
test problems, all / flawed / rest. The family needs a learner that is *locked* (flawed
pass@1 near 0) and strong on the rest, at every seed, since another CPU's rounding acts like
another seed. Compare recipes on the same seeds, run side by side:

    python benchmarks/learner_recipes.py --steps 2400 --bs 32 --lr 6e-3 --seed 2 --threads 1
    python benchmarks/learner_recipes.py --steps 2400 --bs 32 --lr 6e-3 --seed 12 --threads 1
    python benchmarks/learner_recipes.py --layers 2 --hidden 64 --steps 3000 --bs 32 --lr 6e-3 --seed 1 --threads 1

(the last: the explorer's shape and seed). The results of these runs are in docs/testbed.md.
`--time-batches 64 32` instead times `--steps` SFT steps at each batch size side by side in
one process (after 3 warm-up steps) and prints seconds per step and the ratio to the first:

    python benchmarks/learner_recipes.py --steps 40 --time-batches 64 32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, required=True, help="SFT steps")
    ap.add_argument("--bs", type=int, default=64, help="SFT batch size (the sft block's: 64)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (the sft block's: 3e-3)")
    ap.add_argument("--warmup", type=int, default=100, help="warmup steps (the sft block's: 100)")
    ap.add_argument("--seed", type=int, default=2, help="member seed (the default learner's: 2)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--n", type=int, default=16, help="samples per test problem")
    ap.add_argument("--time-batches", type=int, nargs="+", help="only time SFT steps at these batch sizes")
    args = ap.parse_args()
    if args.time_batches:
        return time_batches(args)

    import numpy as np
    import torch

    from pipeline.engines import SamplingParams
    from pipeline.engines.hf import HFEngine
    from pipeline.sample_score import correct_counts
    from pipeline.testbed import task
    from pipeline.testbed.build import make_splits
    from pipeline.testbed.config import PrepareConfig
    from pipeline.testbed.model import ModelShape, build_model
    from pipeline.testbed.sft import train_sft
    from pipeline.testbed.tokenizer import build_char_tokenizer

    torch.set_num_threads(args.threads)
    cfg = PrepareConfig()
    settings = replace(cfg.sft, batch_size=args.bs, lr=args.lr, warmup_steps=args.warmup)
    _, test = make_splits(cfg)
    tokenizer = build_char_tokenizer()
    model = build_model(ModelShape(args.layers, args.hidden), tokenizer, seed=args.seed)
    excluded = frozenset(tuple(int(x) for x in p.question.split("+")) for p in test)
    t0 = time.time()
    losses = train_sft(model, tokenizer, steps=args.steps, settings=settings, spec=cfg.task, seed=args.seed,
                       excluded=excluded)
    sft_s = time.time() - t0
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=cfg.eval_max_new_tokens, seed=args.seed)
    counts = correct_counts(HFEngine(model, tokenizer), tokenizer, test, params, template=task.QUESTION_TEMPLATE)
    flawed = np.array([bool(p.meta["flawed"]) for p in test])
    rate = counts / args.n
    print(json.dumps({**vars(args), "sft_s": round(sft_s, 1), "eval_s": round(time.time() - t0 - sft_s, 1),
                      "loss": round(float(np.mean(losses[-20:])), 4), "all": round(100 * rate.mean(), 1),
                      "flawed": round(100 * rate[flawed].mean(), 1), "rest": round(100 * rate[~flawed].mean(), 1)}),
          flush=True)


def time_batches(args) -> None:
    import torch

    from pipeline.testbed.config import PrepareConfig
    from pipeline.testbed.model import ModelShape, build_model
    from pipeline.testbed.sft import train_sft
    from pipeline.testbed.tokenizer import build_char_tokenizer

    torch.set_num_threads(args.threads)
    cfg = PrepareConfig()
    tokenizer = build_char_tokenizer()
    first = None
    for bs in args.time_batches:
        settings = replace(cfg.sft, batch_size=bs, lr=args.lr, warmup_steps=args.warmup)
        model = build_model(ModelShape(args.layers, args.hidden), tokenizer, seed=args.seed)
        train_sft(model, tokenizer, steps=3, settings=settings, spec=cfg.task, seed=args.seed)
        t0 = time.time()
        train_sft(model, tokenizer, steps=args.steps, settings=settings, spec=cfg.task, seed=args.seed)
        per_step = (time.time() - t0) / args.steps
        first = first or per_step
        print(json.dumps({"batch_size": bs, "threads": args.threads, "s_per_step": round(per_step, 4),
                          "vs_first": round(per_step / first, 3)}), flush=True)


if __name__ == "__main__":
    main()
