"""What `evaluate.model` points at, and how to load it for sampling.

A model is a local directory or a hub id, holding full weights or a peft LoRA adapter.
`resolve_source` decides which without loading anything (the dry run stops there);
`open_engine` loads it. Adapters are merged onto their base (`merge_and_unload`), so
sampling runs at full speed with either engine; for vLLM the merged weights are saved
to a temporary directory (as large as the base model's weights) for the engine to
read. Weights load from safetensors only and `trust_remote_code` stays off unless set,
as everywhere else (`pipeline.models`).
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from pipeline.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class SourceKind(enum.Enum):
    """Full weights or a LoRA adapter; local or on the hub."""

    LOCAL = "local directory"
    LOCAL_ADAPTER = "local LoRA adapter"
    HUB = "hub id"
    HUB_ADAPTER = "hub LoRA adapter"

    @property
    def is_adapter(self) -> bool:
        return self in (SourceKind.LOCAL_ADAPTER, SourceKind.HUB_ADAPTER)


@dataclass(frozen=True)
class ModelSource:
    """A resolved `evaluate.model`: where the weights, the base and the tokenizer come from."""

    kind: SourceKind
    model: str
    base: Optional[str]  # base model of an adapter
    tokenizer: str  # where the tokenizer is read from

    def describe(self) -> str:
        return f"{self.model} ({self.kind.value}" + (f" on {self.base})" if self.base else ")")


def resolve_source(model: str, *, base_model: Optional[str] = None) -> ModelSource:
    """Classify `model` without loading weights.

    Raises:
        UserError: a path that does not exist and is not a hub id, a directory that holds
            neither a model nor an adapter, an adapter without safetensors weights or whose
            base cannot be found.
    """
    path = Path(model)
    if not path.exists():
        if not _HUB_ID.match(model) or model.startswith("."):
            raise UserError(f"evaluate.model {model}: no such directory; give a model directory saved with "
                            "save_pretrained, a peft adapter directory, or a hub id owner/name")
        if base_model:
            return ModelSource(SourceKind.HUB_ADAPTER, model, base_model, base_model)
        return ModelSource(SourceKind.HUB, model, None, model)
    if not path.is_dir():
        raise UserError(f"evaluate.model {model}: is a file; give the model's directory")
    if (path / ADAPTER_CONFIG).is_file():
        return _local_adapter(path, base_model)
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return ModelSource(SourceKind.LOCAL, model, None, model)
    raise UserError(f"evaluate.model {model}: neither a model (config.json + *.safetensors) nor a LoRA adapter "
                    f"({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}); point it at a directory saved with save_pretrained")


def _local_adapter(path: Path, base_model: Optional[str]) -> ModelSource:
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise UserError(f"evaluate.model {path}: LoRA adapter without {ADAPTER_WEIGHTS} (only safetensors are "
                        "loaded); save it with save_pretrained(safe_serialization=True)")
    try:
        recorded = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise UserError(f"{path / ADAPTER_CONFIG}: not valid JSON ({exc.msg}); re-save the adapter") from None
    base = base_model or recorded
    if not base:
        raise UserError(f"{path / ADAPTER_CONFIG}: names no base model; set evaluate.base_model")
    if not Path(base).exists() and (not _HUB_ID.match(base) or base.startswith(".")):
        raise UserError(f"evaluate.model {path}: its base model {base} does not exist here; set "
                        "evaluate.base_model to the base's directory or hub id")
    has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    return ModelSource(SourceKind.LOCAL_ADAPTER, str(path), base, str(path) if has_tokenizer else base)


def load_merged_model(source: ModelSource, *, revision: Optional[str] = None, dtype: str = "auto",
                      trust_remote_code: bool = False):
    """The model with any adapter merged in, in eval mode."""
    from pipeline.models import load_causal_lm

    if not source.kind.is_adapter:
        return load_causal_lm(source.model, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code).eval()
    from peft import PeftModel

    adapter = source.model if source.kind is SourceKind.LOCAL_ADAPTER else _fetch_hub_adapter(source.model, revision)
    base = load_causal_lm(source.base, dtype=dtype, trust_remote_code=trust_remote_code)
    try:
        model = PeftModel.from_pretrained(base, adapter)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"evaluate.model {source.model}: cannot apply the LoRA adapter to {source.base} "
                        f"({str(exc).splitlines()[0][:200]}); check evaluate.base_model") from None
    return model.merge_and_unload().eval()


def _fetch_hub_adapter(repo: str, revision: Optional[str]) -> str:
    """Download only the adapter's config and safetensors weights; return the local folder."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo, revision=revision, allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    except Exception as exc:  # noqa: BLE001 - hub errors have many types; all mean "cannot fetch"
        raise UserError(f"evaluate.model {repo}: cannot fetch the adapter ({str(exc).splitlines()[0][:200]}); "
                        "give a local adapter directory or a hub id available offline") from None
    if not (Path(folder) / ADAPTER_WEIGHTS).is_file():
        raise UserError(f"evaluate.model {repo}: has no {ADAPTER_WEIGHTS} (only safetensors are loaded)")
    return folder


def engine_stop_ids(model, tokenizer, extra) -> tuple[int, ...]:
    """The stop set of a loaded (possibly merged) model (pipeline.engines.stops)."""
    from pipeline.engines.stops import stop_set

    return stop_set(getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id, list(extra))


def _files_stop_ids(path, revision, tokenizer, cfg) -> tuple[int, ...]:
    from pipeline.engines.stops import model_stop_ids

    return model_stop_ids(path, tokenizer, cfg.stop_token_ids, revision=revision,
                          trust_remote_code=cfg.trust_remote_code)


@contextlib.contextmanager
def open_engine(cfg, source: ModelSource, tokenizer) -> Iterator[object]:
    """An `Engine` for `cfg.engine` serving `source`; cleans up any merged copy on exit."""
    from pipeline.engines import EngineKind, resolve_engine_kind

    if resolve_engine_kind(cfg.engine) is not EngineKind.VLLM:
        from pipeline.engines.hf import HFEngine

        model = load_merged_model(source, revision=cfg.revision, dtype=cfg.dtype,
                                  trust_remote_code=cfg.trust_remote_code)
        yield HFEngine(model, tokenizer, batch_size=cfg.generate_batch_size,
                       stop_token_ids=engine_stop_ids(model, tokenizer, cfg.stop_token_ids))
        return
    from pipeline.engines.vllm import VLLMEngine

    with contextlib.ExitStack() as stack:
        path, revision = source.model, cfg.revision
        if source.kind.is_adapter:
            import tempfile

            path, revision = stack.enter_context(tempfile.TemporaryDirectory(prefix="s2lpo-merged-")), None
            model = load_merged_model(source, revision=cfg.revision, dtype=cfg.dtype,
                                      trust_remote_code=cfg.trust_remote_code)
            model.save_pretrained(path, safe_serialization=True)
            tokenizer.save_pretrained(path)
            del model
        yield VLLMEngine(path, revision=revision, dtype=cfg.dtype, seed=cfg.seed,
                         gpu_memory_utilization=cfg.gpu_memory_utilization,
                         tensor_parallel_size=cfg.tensor_parallel_size, max_model_len=cfg.max_model_len,
                         trust_remote_code=cfg.trust_remote_code,
                         stop_token_ids=_files_stop_ids(path, revision, tokenizer, cfg), tokenizer=tokenizer)
