import pytest
import torch

from pipeline.engines import SamplingParams
from pipeline.engines.hf import HFEngine
from pipeline.engines.penalties import PresencePenaltyProcessor, presence_processors


def test_subtracts_once_per_present_response_token_and_ignores_the_prompt():
    # prompt width 2: row 0 prompt [3, 3], response [5, 7, 5]; row 1 prompt [0, 3], response [1, 1, 1]
    input_ids = torch.tensor([[3, 3, 5, 7, 5], [0, 3, 1, 1, 1]])
    scores = torch.arange(16, dtype=torch.float32).reshape(2, 8)
    out = PresencePenaltyProcessor(1.5, prompt_width=2)(input_ids, scores)
    expected = scores.clone()
    expected[0, 5] -= 1.5  # present twice, penalised once
    expected[0, 7] -= 1.5
    expected[1, 1] -= 1.5  # token 3 is only in the prompt: untouched in both rows
    assert torch.equal(out, expected)
    assert torch.equal(scores, torch.arange(16, dtype=torch.float32).reshape(2, 8))  # input not modified


def test_nothing_generated_yet_and_zero_penalty_leave_logits_alone():
    scores = torch.randn(2, 6)
    prompt_only = torch.ones(2, 3, dtype=torch.long)
    assert torch.equal(PresencePenaltyProcessor(1.5, prompt_width=3)(prompt_only, scores), scores)
    assert presence_processors(0.0, prompt_width=3) is None


@pytest.fixture
def one_thread():
    """A 1-layer model generates faster on one thread; on a busy 2-core machine, 12× faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_huge_penalty_bans_repeats_in_hf_generate(tiny_model, char_tokenizer, one_thread):
    prompts = char_tokenizer(["12+34+56=", "9+8="], add_special_tokens=True)["input_ids"]
    params = SamplingParams(n=4, max_new_tokens=30, seed=0, temperature=1.0, presence_penalty=1e4)
    out = HFEngine(tiny_model, char_tokenizer).generate(prompts, params)
    responses = [c.token_ids for group in out for c in group]
    assert all(len(set(ids)) == len(ids) for ids in responses)  # no token twice in one response
    # without the penalty the same random model repeats tokens within 30 steps
    plain = HFEngine(tiny_model, char_tokenizer).generate(prompts, SamplingParams(n=4, max_new_tokens=30, seed=0))
    assert any(len(set(c.token_ids)) < len(c.token_ids) for group in plain for c in group)
