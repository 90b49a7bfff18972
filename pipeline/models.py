"""Loading models and tokenizers — hub ids or local directories, the same way everywhere.

Safety: weights load from safetensors only (`use_safetensors=True`; a directory holding
only pickle weights such as `pytorch_model.bin` is refused before anything is read, since
unpickling can run code), and `trust_remote_code` is off unless the caller turns it on.
Fingerprints identify what was loaded, so a bank can refuse a learner whose tokenizer
differs from its explorer's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.errors import UserError

PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def load_tokenizer(name: str, *, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"{name}: cannot load a tokenizer ({_first_line(exc)}); give a model directory "
                        "or a hub id available offline") from None
    if tok.pad_token_id is None:  # decoder-only models often ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name: str, *, revision: str | None = None, dtype: str = "auto",
                   trust_remote_code: bool = False):
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    refuse_pickle_only(name)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=torch_dtype,
                                                    use_safetensors=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, SafetensorError) as exc:
        fix = ("set trust_remote_code: true only if you trust that code" if "custom code" in str(exc) else
               "give a model directory saved with save_pretrained or a hub id available offline")
        raise UserError(f"{name}: cannot load a causal LM from safetensors ({_first_line(exc)}); {fix}") from None


def refuse_pickle_only(name: str) -> None:
    """A local directory whose weights are pickle files only (no *.safetensors) is refused:
    loading them would unpickle, which can run arbitrary code."""
    path = Path(name)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(f.name for pattern in PICKLE_WEIGHTS for f in path.glob(pattern))
    if pickles:
        raise UserError(f"{name}: holds only pickle weights ({', '.join(pickles[:3])}); s2lpo loads safetensors "
                        "only, since unpickling can run code; convert them where you trust the files "
                        "(save_pretrained(..., safe_serialization=True))")


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary, special tokens and chat template."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": getattr(tokenizer, "chat_template", None) or "",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def model_identity(name: str, revision: str | None = None) -> dict:
    """What identifies a model's weights: the hub id and revision, or for a local directory a
    content hash of config + weights (so moving the directory does not change it)."""
    path = Path(name)
    if path.is_dir():
        refuse_pickle_only(name)
        digest = hashlib.sha256()
        files = sorted(path.glob("*.safetensors")) + [path / "config.json"]
        if not files[:-1] or not files[-1].is_file():
            raise UserError(f"{name}: not a model directory (needs config.json and *.safetensors)")
        for f in files:
            digest.update(f.name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return {"model": "local-directory", "revision": "sha256:" + digest.hexdigest()[:16]}
    return {"model": name, "revision": revision or "main"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
