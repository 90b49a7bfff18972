"""A torchrun worker for tests/stage2_train/test_distributed.py (not a test module).

    torchrun --nproc-per-node 2 tests/stage2_train/torchrun_train.py SPEC.json

SPEC lists `s2lpo train` runs ({"params": path, "resume": bool}), run one after another
in one process group (gloo), then writes `rank-R.json` beside SPEC with checks of the
collectives that need more than one rank:
- `gather_max_diff`: the final model, FSDP-sharded, against its whole weights through
  the two gathering paths (the engines' `merged_state_dict`, the checkpoints'
  `gathered_states`); None keys mean a key mismatch;
- `from_main_error`: the message every rank raises when rank 0's `from_main` fails;
- `sum`, `max`, `gather`: the collectives on rank-dependent values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def _runs(spec: dict) -> None:
    from pipeline.config import load_stage_config
    from stage2_train.config import TrainConfig
    from stage2_train.trainer import run_train

    for run in spec["runs"]:
        cfg = load_stage_config(TrainConfig, "train", params_path=Path(run["params"]))
        run_train(cfg, resume=run["resume"], echo=lambda *_: None, progress=False)


def _gather_max_diff(model_dir: str, d) -> dict:
    from pipeline.models import load_causal_lm
    from stage2_train.distributed import gathered_states, prepare_models
    from stage2_train.learner import merged_state_dict

    whole = load_causal_lm(model_dir).state_dict()
    sharded, _, _ = prepare_models(load_causal_lm(model_dir), None, d)
    merged = merged_state_dict(sharded)
    saved, _ = gathered_states(sharded, None, d)  # rank 0 holds it, with tied aliases dropped

    def diff(state: dict, keys: set) -> float | None:
        if set(state) != keys:
            return None
        return max(float((state[k].cpu() - whole[k]).abs().max()) for k in keys)

    out = {"merged": diff(merged, set(whole))}
    if d.is_main:
        out["gathered"] = diff(saved, set(whole) - {"lm_head.weight"})
    return out


def main(spec_path: str) -> None:
    from pipeline.errors import UserError
    from stage2_train.distributed import Strategy, init_distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # run_train finds it and uses it
    spec = json.loads(Path(spec_path).read_text())
    _runs(spec)
    d = init_distributed(Strategy.FSDP)
    result = {"sum": d.sum(d.rank + 1.5), "max": d.max(d.rank + 1), "gather": d.gather(d.rank)}
    def refuse() -> None:
        raise UserError("refused on rank 0")

    try:
        d.from_main(refuse)
    except UserError as exc:
        result["from_main_error"] = str(exc)
    if spec.get("gather_check"):
        result["gather_max_diff"] = _gather_max_diff(spec["gather_check"], d)
    (Path(spec_path).parent / f"rank-{d.rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
