"""Stage 2 — train: GRPO on the learner, mixing explorer rollouts from the bank at an
annealed rate α (S2L-PO, ../shared/METHOD.md §2).

Pure parts (no I/O, no models): `schedule` (α per step), `groups` (which bank rows and how
many online responses make each prompt's group of G), `rl_math` (advantages, policy
losses, bank corrections, KL, aggregation). The shell around them, in the order a run
meets it: `setup_run` (prompts, learner, bank checks, engine, scorer → the typed
`context.Run`), `learner` (loading, merged weights), `rollout_engines` (the engines behind
the `RolloutEngine` protocol), `step` (one step: plan, sample, assemble, update),
`rollout` (generate, fetch, score), `policy` (packing, log-probs), `ppo` (the PPO
epochs), `step_stats`, `trainer` (the step loop, checkpoints), `checkpoint`, `metrics`,
and `distributed` (torchrun ranks with DDP or FSDP2, and how they split a step).
Imports `pipeline/` (the bank's contract with training is `pipeline.bank.for_training`),
never `stage1_explore/`: the bank on disk is the only contract.
"""
