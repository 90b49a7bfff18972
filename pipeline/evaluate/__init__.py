"""Evaluation of any model (`s2lpo evaluate`) and diversity diagnostics (`s2lpo diversity`).

- `config`    — the `evaluate` section (`EvaluateConfig`; its blocks and presets: `pipeline.config_blocks`);
- `source`    — what a model path or hub id holds (full weights or a LoRA adapter) and loading it;
- `run`       — plan (validated, printed by `--dry-run`), sample, score, write;
- `results`   — the Parquet/JSON records it writes;
- `diversity` — pure functions: distinct correct solutions, where pass@k curves cross;
- `diversity_report` — several models' results side by side, as JSON, CSV and a PNG.

The sample-and-score primitives shared with `prepare` and training's held-out evaluation
(`stage2_train.held_out`) live in `pipeline.sample_score`; pass@k itself in `pipeline.passk`.
"""
