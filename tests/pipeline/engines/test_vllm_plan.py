"""What the vLLM engine asks vLLM for, read without vLLM installed: one request per
(prompt, sample) with its own seed and the engine's stop set."""

import pytest

from pipeline.engines import SamplingParams
from pipeline.engines.base import default_seeds, sample_seed
from pipeline.engines.vllm import LOGPROBS_MODE, request_plan


def test_every_sample_is_its_own_request_with_the_stop_set():
    params = SamplingParams(n=3, temperature=0.7, top_p=0.95, top_k=0, max_new_tokens=9, seed=5,
                            presence_penalty=1.5)
    plan = request_plan([[1, 2], [3]], params, (151643, 151645))
    assert [p for p, _ in plan] == [0, 0, 0, 1, 1, 1]
    assert [kw["seed"] for _, kw in plan] == [s for row in default_seeds(5, 2, 3) for s in row]
    assert len({kw["seed"] for _, kw in plan}) == 6  # no two samples share a stream, within or across prompts
    first = plan[0][1]
    assert {k: v for k, v in first.items() if k != "seed"} == dict(
        n=1, temperature=0.7, top_p=0.95, top_k=-1, max_tokens=9, logprobs=0, presence_penalty=1.5,
        stop_token_ids=[151643, 151645], skip_special_tokens=False)
    assert request_plan([[1, 2], [3]], params, (151643, 151645)) == plan  # a rerun asks for the same streams
    assert LOGPROBS_MODE == "processed_logprobs"


def test_explicit_seeds_and_their_shape():
    params = SamplingParams(n=2, seed=0)
    plan = request_plan([[1]], params, (7,), seeds=[[11, 12]])
    assert [kw["seed"] for _, kw in plan] == [11, 12]
    with pytest.raises(ValueError, match="2 seeds for each of the 1 prompts"):
        request_plan([[1]], params, (7,), seeds=[[11]])


def test_sample_seeds_are_deterministic_and_distinct():
    assert sample_seed(0, "p1", 3) == sample_seed(0, "p1", 3)
    seeds = {sample_seed(b, k, j) for b in (0, 1) for k in ("p1", "p2") for j in range(16)}
    assert len(seeds) == 64 and all(0 <= s < 2**63 for s in seeds)
