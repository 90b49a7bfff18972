import torch

from pipeline.engines import SamplingParams
from pipeline.engines.base import FINISH_LENGTH, FINISH_STOP
from pipeline.engines.hf import HFEngine


def _prompts(tok):
    return tok(["12+34+56=", "9+8="], add_special_tokens=True)["input_ids"]


def test_shapes_finish_reasons_and_text(tiny_model, char_tokenizer):
    engine = HFEngine(tiny_model, char_tokenizer, batch_size=6)
    out = engine.generate(_prompts(char_tokenizer), SamplingParams(n=3, max_new_tokens=7, seed=0))
    assert [len(g) for g in out] == [3, 3]
    for c in (c for g in out for c in g):
        assert len(c.token_ids) == len(c.logprobs) <= 7
        assert c.finish_reason in (FINISH_STOP, FINISH_LENGTH)
        eos = char_tokenizer.eos_token_id
        assert (c.token_ids[-1] == eos) == (c.finish_reason == FINISH_STOP)
        assert eos not in c.token_ids[:-1]
        body = c.token_ids[:-1] if c.finish_reason == FINISH_STOP else c.token_ids
        # specials kept, the stop dropped, ids past the 100-token vocabulary (the embedding has 128 rows) marked
        assert c.text == "".join("<|unused|>" if i >= len(char_tokenizer) else
                                 char_tokenizer.decode([i], skip_special_tokens=False) for i in body)
        assert all(lp <= 0 for lp in c.logprobs)


def test_logprobs_match_a_teacher_forced_forward(tiny_model, char_tokenizer):
    prompts = _prompts(char_tokenizer)
    out = HFEngine(tiny_model, char_tokenizer).generate(prompts, SamplingParams(n=2, max_new_tokens=6, seed=3))
    for prompt, group in zip(prompts, out):
        for c in group:
            ids = torch.tensor([list(prompt) + list(c.token_ids)])
            with torch.no_grad():
                logp = torch.log_softmax(tiny_model(ids).logits[0, :-1].float(), -1)
            expected = logp[len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)


def test_seed_makes_a_call_reproducible(tiny_model, char_tokenizer):
    engine = HFEngine(tiny_model, char_tokenizer)
    params = SamplingParams(n=4, max_new_tokens=8, seed=11, temperature=1.3)
    a = engine.generate(_prompts(char_tokenizer), params)
    b = engine.generate(_prompts(char_tokenizer), params)
    c = engine.generate(_prompts(char_tokenizer), SamplingParams(n=4, max_new_tokens=8, seed=12, temperature=1.3))
    assert a == b
    assert a != c


def test_logprobs_are_those_of_the_sampling_distribution(tiny_model, char_tokenizer):
    """At temperature 0.7 / top-p 0.95 (the bank's sampling) a token's log-prob is under the
    tempered, top-p-renormalised distribution it was drawn from, not the raw one."""
    from transformers import TopPLogitsWarper

    prompts = _prompts(char_tokenizer)
    params = SamplingParams(n=3, max_new_tokens=6, seed=4, temperature=0.7, top_p=0.95)
    out = HFEngine(tiny_model, char_tokenizer).generate(prompts, params)
    top_p = TopPLogitsWarper(0.95)
    for prompt, group in zip(prompts, out):
        for c in group:
            ids = torch.tensor([list(prompt) + list(c.token_ids)])
            with torch.no_grad():
                logits = tiny_model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.7
            warped = top_p(ids, logits)
            expected = torch.log_softmax(warped, -1).gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)
            raw = torch.log_softmax(logits * 0.7, -1).gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)
            assert not torch.allclose(expected, raw, atol=1e-3)  # the two conventions differ here


def test_top_k_zero_means_no_top_k_filter(tiny_model, char_tokenizer):
    """top_k = 0 disables the filter: more than transformers' default top-k of 50 of the 100
    testbed tokens are drawn (a guard: the model's generation_config must not fill it in)."""
    (group,) = HFEngine(tiny_model, char_tokenizer).generate(
        char_tokenizer(["1+2+3="])["input_ids"], SamplingParams(n=400, max_new_tokens=1, seed=0, temperature=5.0))
    assert len({c.token_ids[0] for c in group}) > 50
