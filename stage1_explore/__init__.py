"""Stage 1 — explore: fill the rollout bank with the frozen explorer's samples and rewards.

Imports `pipeline/` only; its one output is the bank on disk (see `pipeline.bank`).
"""
