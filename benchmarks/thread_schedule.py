"""Does the thread count of each SFT step change the trained weights? (It does.)

Trains the default learner shape for 60 SFT steps four times and prints a sha256 prefix of
its weights: on two threads, again on two threads, and starting on one thread and switching
to two after step 20 or 30 — as the learner did when it widened once a spawned explorer
finished, at a step that depended on timing. `s2lpo prepare` therefore trains each member on
a fixed thread count (pipeline/testbed/build.py, docs/testbed.md):

    python benchmarks/thread_schedule.py
"""

from __future__ import annotations

import hashlib


def train(switch_after: int) -> str:
    """sha256 prefix of the learner after 60 steps; one thread until `switch_after` (0 = two throughout)."""
    import torch

    from pipeline.testbed.config import PrepareConfig
    from pipeline.testbed.model import ModelShape, build_model
    from pipeline.testbed.sft import train_sft
    from pipeline.testbed.tokenizer import build_char_tokenizer

    cfg = PrepareConfig()
    tokenizer = build_char_tokenizer()
    model = build_model(ModelShape(cfg.learner.layers, cfg.learner.hidden), tokenizer, seed=cfg.learner.seed)
    torch.set_num_threads(1 if switch_after else 2)

    def widen(step: int, loss: float) -> None:
        if switch_after and step + 1 == switch_after:
            torch.set_num_threads(2)

    train_sft(model, tokenizer, steps=60, settings=cfg.sft, spec=cfg.task, seed=cfg.learner.seed, progress=widen)
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:8]


def main() -> None:
    print("two threads:", train(0), "| again:", train(0),
          "| one thread, two after step 20:", train(20), "| after step 30:", train(30))


if __name__ == "__main__":
    main()
