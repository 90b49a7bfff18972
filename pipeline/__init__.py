"""s2lpo — Small-to-Large Policy Optimization.

`pipeline/` holds the contracts that both stages share: configuration, prompts,
data loaders, the verifier, pass@k, generation engines, the CPU testbed model
family and the command line. `stage1_explore/` fills the rollout bank and
`stage2_train/` trains from it; the stages import `pipeline/`, never each other.
"""

__version__ = "0.1.0"
