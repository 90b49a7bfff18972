"""Stop tokens with the real Qwen3 tokenizer and a tiny random Qwen3 at the real vocabulary.

The model is `pipeline.tiny`'s 1-layer × 64 stand-in of a Qwen3 base model (tests/conftest.py:
`tiny_qwen3`); `favour` makes
it emit three ordinary tokens (never a stop id) and then one chosen id forever, so every
response must end at exactly token 4 — unless the engine does not stop on that id, when it
runs to `max_new_tokens` repeating it (what the HF engine did with `<|endoftext|>`).
"""

from __future__ import annotations

import pytest
import torch

from pipeline.engines import SamplingParams
from pipeline.engines.base import FINISH_LENGTH, FINISH_STOP
from pipeline.engines.hf import HFEngine
from pipeline.engines.stops import cut_at_stop, model_stop_ids, response_text, stop_set
from pipeline.errors import UserError
from pipeline.verifier import score_response

pytestmark = pytest.mark.slow  # loading the 151k-token tokenizer and a 151,936 × 64 embedding: ~10 s on 2 cores

ENDOFTEXT, IM_START, IM_END, IMAGE_PAD, TOOL_CALL = 151643, 151644, 151645, 151655, 151657
PLAIN = 8  # ")" — an ordinary id, made a stop only by the user's stop_token_ids
QWEN3_VOCAB = 151936


def test_tiny_qwen3_keeps_the_real_interface(tiny_qwen3, qwen3_tok):
    cfg = tiny_qwen3.config
    assert (cfg.model_type, cfg.vocab_size, cfg.tie_word_embeddings) == ("qwen3", QWEN3_VOCAB, True)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (1, 64, 2, 1)
    assert cfg.rope_parameters["rope_theta"] == 1000000.0 and cfg.max_position_embeddings == 32768
    assert tiny_qwen3.generation_config.eos_token_id == ENDOFTEXT and qwen3_tok.eos_token_id == IM_END


def test_stop_set_is_generation_config_plus_tokenizer_plus_user(tiny_qwen3_dir, qwen3_tok):
    assert model_stop_ids(str(tiny_qwen3_dir), qwen3_tok) == (ENDOFTEXT, IM_END)
    assert model_stop_ids(str(tiny_qwen3_dir), qwen3_tok, [PLAIN, IM_END]) == (PLAIN, ENDOFTEXT, IM_END)
    assert stop_set([IM_END, ENDOFTEXT], IM_END, None) == (ENDOFTEXT, IM_END)  # a post-trained model's list
    with pytest.raises(UserError, match="stop_token_ids: 999999 is not a token id"):
        model_stop_ids(str(tiny_qwen3_dir), qwen3_tok, [999999])


@pytest.mark.parametrize("stop", [ENDOFTEXT, IM_END, PLAIN])
def test_hf_engine_stops_on_every_id_of_the_set(tiny_qwen3, tiny_qwen3_dir, qwen3_tok, steer, stop):
    stops = model_stop_ids(str(tiny_qwen3_dir), qwen3_tok, [PLAIN] if stop == PLAIN else [])
    engine = HFEngine(tiny_qwen3, qwen3_tok, stop_token_ids=stops) if stop == PLAIN else HFEngine(tiny_qwen3, qwen3_tok)
    prompts = qwen3_tok(["What is 1+1?", "Name a prime."])["input_ids"]
    with steer.favour(tiny_qwen3, stop):
        out = engine.generate(prompts, SamplingParams(n=2, max_new_tokens=12, seed=0))
    for c in (c for group in out for c in group):
        assert len(c.token_ids) == 4 and c.token_ids[-1] == stop and c.finish_reason == FINISH_STOP
        assert len(c.logprobs) == 4 and c.logprobs[-1] == pytest.approx(0.0, abs=1e-4)
        assert c.text == qwen3_tok.decode(list(c.token_ids[:3]))  # the stop token is not text


def test_a_response_that_never_stops_runs_to_length(tiny_qwen3, qwen3_tok, steer):
    prompts = qwen3_tok(["What is 1+1?"])["input_ids"]
    with steer.favour(tiny_qwen3, IM_START, body=12):  # <|im_start|> is no stop id: it stays inside the response
        (group,) = HFEngine(tiny_qwen3, qwen3_tok).generate(prompts, SamplingParams(n=2, max_new_tokens=6, seed=0))
    for c in group:
        assert len(c.token_ids) == 6 and c.finish_reason == FINISH_LENGTH


def test_responses_of_only_a_stop_token_and_special_tokens_inside(qwen3_tok, tiny_qwen3, steer):
    with steer.favour(tiny_qwen3, ENDOFTEXT, body=0):
        (group,) = HFEngine(tiny_qwen3, qwen3_tok).generate(qwen3_tok(["Hi"])["input_ids"],
                                                            SamplingParams(n=3, max_new_tokens=5, seed=1))
    assert [(c.token_ids, c.text, c.finish_reason) for c in group] == [((ENDOFTEXT,), "", FINISH_STOP)] * 3
    one, two = qwen3_tok.encode("1"), qwen3_tok.encode("2")
    ids = [*one, IM_START, *two, IMAGE_PAD, TOOL_CALL, IM_END]
    kept, stopped = cut_at_stop(ids, (ENDOFTEXT, IM_END))
    assert kept == tuple(ids) and stopped
    text = response_text(qwen3_tok, kept, stopped=True)
    assert text == "1<|im_start|>2<|image_pad|><tool_call>"  # special tokens stay text: "12" would be a number
    assert response_text(qwen3_tok, (IM_END,), stopped=True) == ""
    # ids the embedding has past the tokenizer (151669..151935) decode to nothing in `tokenizers`
    assert response_text(qwen3_tok, (*one, 151900, *two, 151935), stopped=False) == "1<|unused|>2<|unused|>"
    assert score_response(response_text(qwen3_tok, (*one, 151900, *two), stopped=False), "12").extracted != "12"
    assert cut_at_stop([5, 6, 7], (ENDOFTEXT,)) == ((5, 6, 7), False)


def test_scripted_weights_stop_without_a_hook(qwen3_tok, steer):
    """`steer.scripted` (used by the vLLM tests) emits its script from its weights alone."""
    model = steer.scripted([40, 41, ENDOFTEXT])
    out = HFEngine(model, qwen3_tok).generate(qwen3_tok(["What is 1+1?", "x"])["input_ids"],
                                              SamplingParams(n=2, max_new_tokens=6, seed=0))
    assert {(c.token_ids, c.text, c.finish_reason) for g in out for c in g} == {((40, 41, ENDOFTEXT), "IJ", FINISH_STOP)}
