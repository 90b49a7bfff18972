"""Shared fixtures: the testbed tokenizer and tiny random models of its family."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def char_tokenizer():
    from pipeline.testbed.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(char_tokenizer):
    """A randomly initialised 1-layer testbed model (fp32, eval mode)."""
    from pipeline.testbed.model import ModelShape, build_model

    return build_model(ModelShape(layers=1, hidden=64), char_tokenizer, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory, char_tokenizer, tiny_model):
    """A saved tiny explorer (random 1-layer testbed model) and 40 testbed prompts."""
    import numpy as np

    from pipeline.data import Problem, write_problems_jsonl
    from pipeline.testbed import task

    root = tmp_path_factory.mktemp("family")
    tiny_model.save_pretrained(root / "explorer")
    char_tokenizer.save_pretrained(root / "explorer")
    nums = task.sample_numbers(np.random.default_rng(0), 40, task.TaskSpec())
    problems = [Problem(f"p{i:03d}", task.question(tuple(n)), task.answer(tuple(n)), {}) for i, n in enumerate(nums)]
    write_problems_jsonl(problems, root / "train.jsonl")
    return root


QWEN3_TOKENIZER = FIXTURES / "qwen3-tokenizer"


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir(tmp_path_factory) -> Path:
    """The real Qwen3 tokenizer and chat template (vendored, `tokenizer.json` xz-compressed)
    unpacked into a directory `AutoTokenizer.from_pretrained` loads."""
    import lzma
    import shutil

    out = tmp_path_factory.mktemp("qwen3-tokenizer")
    (out / "tokenizer.json").write_bytes(lzma.decompress((QWEN3_TOKENIZER / "tokenizer.json.xz").read_bytes()))
    shutil.copy(QWEN3_TOKENIZER / "tokenizer_config.json", out / "tokenizer_config.json")
    return out


# --------------------------------------------------------------------------- a tiny random Qwen3 on the real tokenizer

ENDOFTEXT, IM_START, IM_END = 151643, 151644, 151645  # Qwen3's stop-relevant ids
PLAIN = 8  # ")" — an ordinary id, made a stop only by a user's stop_token_ids
QWEN3_VOCAB = 151936


def qwen3_base_config():
    from transformers import Qwen3Config

    # Qwen3-1.7B-Base's public architecture numbers, apart from what tiny_config shrinks
    return Qwen3Config(vocab_size=QWEN3_VOCAB, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
                       bos_token_id=ENDOFTEXT, eos_token_id=ENDOFTEXT)


@pytest.fixture(scope="session")
def qwen3_tok(qwen3_tokenizer_dir):
    from pipeline.models import load_tokenizer

    return load_tokenizer(str(qwen3_tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory, qwen3_tok):
    """A saved tiny Qwen3 base model: generation_config lists only <|endoftext|>, the tokenizer's eos is <|im_end|>."""
    from transformers import GenerationConfig

    from pipeline.tiny import save_tiny_model, tiny_model_from_config

    out = tmp_path_factory.mktemp("tiny-qwen3")
    model = tiny_model_from_config(qwen3_base_config(), generation_config=GenerationConfig(
        bos_token_id=ENDOFTEXT, eos_token_id=ENDOFTEXT))
    save_tiny_model(model, qwen3_tok, out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_qwen3_dir):
    from pipeline.models import load_causal_lm

    return load_causal_lm(str(tiny_qwen3_dir), dtype="float32").eval()


class _HeadHook:
    """A forward hook on `self.model.lm_head` (`self.hook`) for the duration of a `with` block."""

    def __enter__(self):
        self.handle = self.model.lm_head.register_forward_hook(self.hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class favour(_HeadHook):
    """Context manager: `model` emits `body` ordinary tokens, then `token` at every later step
    (a forward hook on lm_head; the first call of a `generate` is the prompt's prefill)."""

    def __init__(self, model, token: int, *, body: int = 3, never=(ENDOFTEXT, IM_START, IM_END, PLAIN)) -> None:
        self.model, self.token, self.body, self.never, self.calls = model, token, body, list(never), 0

    def hook(self, module, args, logits):
        logits = logits.clone()
        self.calls += 1
        if self.calls <= self.body:
            logits[..., self.never] = -1e9  # no stop id, by chance or otherwise, inside the body
        else:
            logits[..., self.token] = 1e4
        return logits



class forced(_HeadHook):
    """Context manager: `model` emits `tokens` in order, then the last one forever (a forward
    hook on lm_head; call j of a `generate` — the first is the prompt's prefill — picks token j)."""

    def __init__(self, model, tokens) -> None:
        self.model, self.tokens, self.calls = model, list(tokens), 0

    def hook(self, module, args, logits):
        logits = logits.clone()
        logits[..., self.tokens[min(self.calls, len(self.tokens) - 1)]] = 1e4
        self.calls += 1
        return logits



@pytest.fixture(scope="session")
def steer():
    """Ways tests steer a tiny Qwen3: `steer.favour(model, token, body=3)` and
    `steer.forced(model, tokens)` (context managers over a model in this process), and
    `steer.scripted(tokens)`, a model whose weights emit `tokens` (for any engine)."""
    import types

    return types.SimpleNamespace(favour=favour, forced=forced, scripted=scripted_qwen3)


def scripted_qwen3(script, *, stop_ids=(ENDOFTEXT,)):
    """A tiny Qwen3 (real vocabulary, untied) whose *weights* make it emit `script` and then
    `script[-1]` forever, on any prompt that does not end in a script token — on any engine
    (HF or vLLM: no hook). The blocks are zeroed, so the last hidden state is the current
    token's embedding: every token embeds to e_0, script[k] to e_{k+1}, and lm_head row
    script[k] points along e_k (a logit margin of 800: sampling at any temperature ≤ 1 picks it)."""
    import torch
    from transformers import GenerationConfig

    from pipeline.tiny import tiny_model_from_config

    config = qwen3_base_config()
    config.tie_word_embeddings = False
    model = tiny_model_from_config(config, generation_config=GenerationConfig(
        bos_token_id=ENDOFTEXT, eos_token_id=list(stop_ids)))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        emb[:, 0] = 1.0
        head.zero_()
        for k, tok in enumerate(script):
            if k + 1 < emb.shape[1] and tok not in script[:k]:
                emb[tok] = 0.0
                emb[tok, k + 1] = 1.0
            head[tok, k] = 100.0
    return model
