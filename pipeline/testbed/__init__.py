"""The CPU testbed: a synthetic math task and a small explorer / large learner model family.

Real users run Qwen3-1.7B → Qwen3-8B on GPUs. Here nothing can be downloaded, so
`s2lpo prepare` builds a family that later stages load exactly like hub models
(`from_pretrained` on a directory). See `pipeline/testbed/build.py`.
"""
