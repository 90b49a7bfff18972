"""Stage 2 — train: GRPO on the learner, mixing explorer rollouts from the bank at an
annealed rate α (S2L-PO, ../shared/METHOD.md §2).

Pure parts (no I/O, no models): `schedule` (α per step), `groups` (which bank rows and how
many online responses make each prompt's group of G), `rl_math` (advantages, policy
losses, KL, aggregation). The shell around them: `rollout` (generate, fetch, score),
`policy` (log-probs), `trainer` (the step loop), `checkpoint`, `metrics`, and
`distributed` (torchrun ranks with DDP or FSDP2, and how they split a step).
Imports `pipeline/`, never `stage1_explore/`: the bank on disk is the only contract.
"""
