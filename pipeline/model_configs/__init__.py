"""The architecture of model X without its weights: config.json and generation_config.json.

`model_config(name)` looks, in order, in
1. a local model directory `name` (its config.json, and generation_config.json if present);
2. the Hugging Face hub: the local hub cache, then the hub itself when it is reachable
   (config files only; `HF_HUB_OFFLINE=1`, or no route to the endpoint within
   `PROBE_TIMEOUT_S`, skips the network at once instead of retrying for half a minute);
3. the configs shipped in this package (`pipeline/model_configs/<owner>/<name>/`): the
   public config.json architecture numbers of Qwen3-1.7B/4B/8B/14B-Base and their
   generation_config.json stop ids;
and otherwise raises a one-line UserError naming the `huggingface-cli download` that fixes it.
Nothing here reads weights; memory estimates and dry runs are built on it.

The Base models' generation_config.json lists eos_token_id 151643 (`<|endoftext|>`); their
tokenizer's eos is `<|im_end|>` 151645, so a stop set needs both (`ModelConfig.eos_token_ids`
gives the former; the tokenizer the latter).
"""

from __future__ import annotations

import enum
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from pipeline.errors import UserError

SHIPPED = Path(__file__).parent
CONFIG, GENERATION_CONFIG = "config.json", "generation_config.json"
PROBE_TIMEOUT_S = 2.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigSource(enum.Enum):
    """Where a model's config was read."""

    LOCAL = "local directory"
    HUB = "hub"
    SHIPPED = "shipped with s2lpo"


@dataclass(frozen=True)
class ModelConfig:
    """A model's config.json (`config`) and generation_config.json (`generation`, {} when absent)."""

    name: str
    source: ConfigSource
    where: str  # the directory or hub cache file read
    config: dict
    generation: dict = field(default_factory=dict)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """generation_config's eos_token_id (an int or a list), else config.json's; () if neither."""
        ids = self.generation.get("eos_token_id", self.config.get("eos_token_id"))
        if ids is None:
            return ()
        return tuple(sorted({int(i) for i in (ids if isinstance(ids, list) else [ids])}))

    def transformers_config(self, **overrides):
        """This architecture as a transformers config (with `overrides`), e.g. to build the
        model on the meta device or a small random one of the same family; reads no weights."""
        from transformers import AutoConfig

        return AutoConfig.for_model(**{**self.config, **overrides})

    def describe(self) -> str:
        where = f"pipeline/model_configs/{self.name}" if self.source is ConfigSource.SHIPPED else self.where
        return f"{self.name} ({self.source.value}: {where})"


def shipped_models() -> list[str]:
    """Hub ids whose configs ship with the package."""
    return sorted(str(p.parent.relative_to(SHIPPED)) for p in SHIPPED.glob(f"*/*/{CONFIG}"))


def is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith(".") and not Path(name).exists()


def model_config(name: str, *, revision: Optional[str] = None, key: str = "model") -> ModelConfig:
    """The config of model `name` (a local directory or a hub id); `key` names the setting
    in the error (e.g. "train.learner").

    Raises:
        UserError: `name` is neither a directory holding config.json nor a hub id whose
            config is cached, reachable or shipped.
    """
    path = Path(name)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise UserError(f"{key} {name}: has no {CONFIG}; point it at a model directory saved with "
                            "save_pretrained")
        return ModelConfig(name, ConfigSource.LOCAL, str(path), _read(path / CONFIG),
                           _read(path / GENERATION_CONFIG) if (path / GENERATION_CONFIG).is_file() else {})
    if not is_hub_id(name):
        raise UserError(f"{key} {name}: no such directory; give a model directory or a hub id owner/name")
    found = _from_hub(name, revision) or _shipped(name)
    if found is None:
        raise UserError(f"{key} {name}: its config is not here, not in the hub cache and the hub is not reachable; "
                        f"run `huggingface-cli download {name} {CONFIG} tokenizer.json tokenizer_config.json "
                        f"{GENERATION_CONFIG} --local-dir models/{name.split('/')[-1]}` where the hub is reachable "
                        f"and set {key} to that directory")
    return found


def _read(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc}); re-download it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object; re-download it")
    return data


def _shipped(name: str) -> Optional[ModelConfig]:
    folder = SHIPPED / name
    if not (folder / CONFIG).is_file():
        return None
    return ModelConfig(name, ConfigSource.SHIPPED, str(folder), _read(folder / CONFIG),
                       _read(folder / GENERATION_CONFIG))


def _from_hub(name: str, revision: Optional[str]) -> Optional[ModelConfig]:
    """config.json from the hub cache, else from the hub when it answers; None otherwise."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, CONFIG, revision=revision)
    if isinstance(cached, str):
        gen = try_to_load_from_cache(name, GENERATION_CONFIG, revision=revision)
        return ModelConfig(name, ConfigSource.HUB, cached, _read(Path(cached)),
                           _read(Path(gen)) if isinstance(gen, str) else {})
    if offline() or not hub_reachable():
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        config = hf_hub_download(name, CONFIG, revision=revision, etag_timeout=PROBE_TIMEOUT_S * 5)
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError):  # unknown repo, gated, network gone
        return None
    try:
        gen = _read(Path(hf_hub_download(name, GENERATION_CONFIG, revision=revision, etag_timeout=PROBE_TIMEOUT_S * 5)))
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        gen = {}
    return ModelConfig(name, ConfigSource.HUB, config, _read(Path(config)), gen)


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, now or when huggingface_hub was imported."""
    from huggingface_hub import is_offline_mode

    return is_offline_mode() or any(os.environ.get(k, "").upper() in {"1", "ON", "YES", "TRUE"}
                                    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout_s`."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False
