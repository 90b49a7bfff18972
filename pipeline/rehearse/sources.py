"""Where a rehearsal finds a real model's config and tokenizer (never its weights).

The config comes from `pipeline.model_configs.model_config` (a local directory, the hub
cache or the hub, or the configs shipped for the recipe's models). The tokenizer, in
order: `--model ID=DIR` or the model directory itself; the hub cache, or the hub when it
is reachable (tokenizer files only); the `--tokenizer DIR` given. Nothing found: one line
saying what to download.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError
from pipeline.rehearse.models import RealModel

TOKENIZER_REQUIRED = ("tokenizer_config.json",)
TOKENIZER_OPTIONAL = ("tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja")


def has_tokenizer(path: Path) -> bool:
    return path.is_dir() and (path / "tokenizer_config.json").is_file() and (
        (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file() or (path / "tokenizer.model").is_file())


def resolve_real_model(name: str, *, local: str | None = None, tokenizer: str | None = None) -> RealModel:
    """Config, stop ids and tokenizer directory of the model the recipe calls `name`."""
    from pipeline.model_configs import model_config

    from transformers import AutoTokenizer

    found = model_config(local or name, key=f"model {name}")
    tok = _tokenizer_dir(name, local, tokenizer)
    # a base model prompted through the chat template ends its turn on the tokenizer's eos
    # (<|im_end|>), one prompted with plain text on generation_config's: the stand-in does both
    eos = AutoTokenizer.from_pretrained(tok).eos_token_id
    stops = tuple(dict.fromkeys(([eos] if eos is not None else []) + list(found.eos_token_ids)))
    return RealModel(name=name, config=found.config, stop_ids=stops, tokenizer_dir=tok, source=found.source.value,
                     generation=dict(found.generation) or None)


def _tokenizer_dir(name: str, local: str | None, tokenizer: str | None) -> str:
    for candidate in (local, name):
        if candidate and has_tokenizer(Path(candidate)):
            return candidate
    cached = _hub_tokenizer(name)
    if cached:
        return cached
    if tokenizer:
        tokenizer = unpacked(tokenizer)
        if not has_tokenizer(Path(tokenizer)):
            raise UserError(f"--tokenizer {tokenizer}: no tokenizer_config.json with tokenizer.json/vocab.json there; "
                            "give the directory of the real model's tokenizer files")
        return tokenizer
    raise UserError(f"{name}: no tokenizer here and the hub is not reachable; run `huggingface-cli download {name} "
                    "config.json generation_config.json tokenizer.json tokenizer_config.json --local-dir "
                    f"models/{name.split('/')[-1]}` where it is, then pass --model {name}=models/{name.split('/')[-1]}"
                    " (or --tokenizer DIR)")


def unpacked(path: str) -> str:
    """A tokenizer directory whose tokenizer.json is stored xz-compressed (as the repository
    vendors Qwen3's, tests/fixtures/qwen3-tokenizer) → an unpacked copy in a temporary directory."""
    import lzma
    import shutil
    import tempfile

    src = Path(path)
    if not (src / "tokenizer.json.xz").is_file() or (src / "tokenizer.json").is_file():
        return path
    out = Path(tempfile.mkdtemp(prefix="s2lpo-tokenizer-"))
    (out / "tokenizer.json").write_bytes(lzma.decompress((src / "tokenizer.json.xz").read_bytes()))
    for f in src.iterdir():
        if f.is_file() and f.name != "tokenizer.json.xz" and f.suffix == ".json":
            shutil.copy(f, out / f.name)
    return str(out)


def _hub_tokenizer(name: str) -> str | None:
    """The directory of the model's tokenizer files in the hub cache (downloading them when online)."""
    from pipeline.model_configs import hub_reachable, is_hub_id, offline

    if not is_hub_id(name):
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "tokenizer_config.json")
    if isinstance(cached, str) and has_tokenizer(Path(cached).parent):
        return str(Path(cached).parent)
    if offline() or not hub_reachable():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return snapshot_download(name, allow_patterns=[*TOKENIZER_REQUIRED, *TOKENIZER_OPTIONAL])
    except (OSError, ValueError, HfHubHTTPError):  # unknown repo, gated, network gone: the caller says what to do
        return None
