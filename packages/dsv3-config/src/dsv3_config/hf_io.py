"""Reading and writing Hugging Face `config.json` files.

Keys fall in three sets: fields of `ModelConfig`; HF bookkeeping keys that inference does not use
(kept in `hf_extra`, listed in `RECOGNIZED_UNUSED_KEYS`); and anything else, also kept in
`hf_extra` but reported in one `UnusedConfigKeysWarning` so a typo never disappears silently.
transformers 5 writes YaRN under `rope_parameters` (with `rope_theta` inside); both spellings load.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsv3_config.errors import ConfigError, one_line
from dsv3_config.hf_defaults import with_reference_defaults
from dsv3_config.json_reading import first_unrepresentable, read_json_object
from dsv3_config.model_config import ModelConfig

RECOGNIZED_UNUSED_KEYS = frozenset(
    {
        "architectures",
        "auto_map",
        "transformers_version",
        "initializer_range",
        "attention_dropout",
        "use_cache",
        "ep_size",
        "aux_loss_alpha",
        "seq_aux",
        "pretraining_tp",
        "pad_token_id",
        "dtype",
        "_name_or_path",
        "head_dim",
        "rope_interleave",
        "mlp_bias",
        "num_experts",
        "moe_group_size",
        "qk_head_dim",
        "output_router_logits",
        "num_mtp_layers",
        "router_aux_loss_coef",
    }
)


class UnusedConfigKeysWarning(UserWarning):
    """Keys in a config.json that dsv3 does not know; they are kept and written back by `to_hf()`."""


def load_config(source: str | Path | dict[str, Any]) -> ModelConfig:
    """Parse a `config.json` path, a directory holding one, or an already-loaded dict.

    Keys the file omits take the reference implementation's value for its `model_type` (`hf_defaults`).
    Raises `ConfigError` (and nothing else) with one line naming the file and the field for anything that
    cannot describe a runnable model.
    """
    if isinstance(source, dict):
        label, raw = "config", source
        problem = first_unrepresentable(raw)
        if problem is not None:
            raise ConfigError(f"{label}: {problem}")
    else:
        path = Path(source)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(f"{path}: directory has no config.json")
            path = path / "config.json"
        label, raw = str(path), read_json_object(path)
    try:
        return ModelConfig.model_validate(with_reference_defaults(normalize_hf_dict(raw)))
    except ValidationError as err:
        raise ConfigError(f"{label}: {one_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested too deeply to be a config") from None


def normalize_hf_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """Map an HF dict onto `ModelConfig`'s fields, moving the rest into `hf_extra`."""
    data = dict(raw)
    rope_parameters = data.pop("rope_parameters", None)
    if isinstance(rope_parameters, dict):
        rope_parameters = dict(rope_parameters)
        theta = rope_parameters.pop("rope_theta", None)
        if theta is not None:
            data.setdefault("rope_theta", theta)
        if rope_parameters.get("rope_type", rope_parameters.get("type")) in (None, "default"):
            rope_parameters = None
        data.setdefault("rope_scaling", rope_parameters)
    if "dtype" in data and "torch_dtype" not in data:
        data["torch_dtype"] = data["dtype"]
    fields = set(ModelConfig.model_fields)
    extra = data.pop("hf_extra", None) or {}
    if not isinstance(extra, dict):
        data["hf_extra"] = extra  # let validation name the field
        return data
    extra = dict(extra)
    unknown = []
    for key in list(data):
        if key not in fields:
            extra[key] = data.pop(key)
            if key not in RECOGNIZED_UNUSED_KEYS:
                unknown.append(key)
    if unknown:
        warnings.warn(
            f"config keys not used by dsv3 (kept for to_hf): {', '.join(sorted(unknown))}",
            UnusedConfigKeysWarning,
            stacklevel=3,
        )
    data["hf_extra"] = extra
    return data


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """Inverse of `normalize_hf_dict` for the legacy (transformers 4.x / DeepSeek) spelling."""
    out: dict[str, Any] = dict(config.hf_extra)
    for name in ModelConfig.model_fields:
        if name in ("hf_extra", "rope_scaling", "quantization_config", "yarn_policy"):
            continue
        value = getattr(config, name)
        if name == "torch_dtype" and value is None:
            continue
        out[name] = value
    out["rope_scaling"] = None if config.rope_scaling is None else config.rope_scaling.to_hf()
    if config.quantization_config is not None:
        out["quantization_config"] = config.quantization_config.to_hf()
    if config.yarn_policy != "always":
        out["yarn_policy"] = config.yarn_policy
    return out


def save_config(config: ModelConfig, directory: str | Path) -> Path:
    """Write `config.json` atomically (temporary name, then rename)."""
    target = Path(directory) / "config.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config.to_hf(), indent=2, sort_keys=True) + "\n")
    tmp.replace(target)
    return target
