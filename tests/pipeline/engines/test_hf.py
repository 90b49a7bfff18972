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
        assert c.text == char_tokenizer.decode(c.token_ids, skip_special_tokens=True)
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
