"""`dsv3 config show PATH|PRESET [--json]`: the parsed config and its derived values.

Every count is closed-form (a config may declare 10^18 layers), and `--json` is strict JSON (no NaN
tokens; the loader refuses non-finite numbers, and `allow_nan=False` would fail loudly if one slipped by).
A bad file or an unknown preset is a `ConfigError`: one line, exit status 1 (`cli/main.py`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dsv3_config import PRESETS, ConfigError, ModelConfig, count_params, load_config, preset


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = subparsers.add_parser("config", help="inspect model configurations")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print a config.json or preset with its derived values")
    show.add_argument("source", help=f"config.json, a model directory, or a preset ({', '.join(PRESETS)})")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_show)


def resolve_config(source: str) -> ModelConfig:
    """A preset name, a `config.json` path, or a directory containing one."""
    if Path(source).exists():
        return load_config(source)
    if source in PRESETS:
        return preset(source)
    raise ConfigError(f"{source}: no such file or directory, nor a preset (presets: {', '.join(PRESETS)})")


def derived_values(cfg: ModelConfig) -> dict[str, Any]:
    counts = count_params(cfg)
    return {
        "qk_head_dim": cfg.qk_head_dim,
        "latent_cache_width": cfg.latent_cache_width,
        "softmax_scale": cfg.softmax_scale,
        "num_layers": cfg.num_hidden_layers,
        "dense_layers": cfg.num_dense_layers,
        "moe_layers": cfg.num_moe_layers,
        "mtp_layers": cfg.num_nextn_predict_layers,
        "yarn_policy": cfg.yarn_policy if cfg.uses_yarn else "none",
        "total_params": counts.total,
        "total_params_with_mtp": counts.total_with_mtp,
        "activated_params": counts.activated,
    }


def _show(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.source)
    derived = derived_values(cfg)
    hf = cfg.to_hf()
    if args.json:
        print(json.dumps({"config": hf, "derived": derived}, indent=2, sort_keys=True, allow_nan=False))
        return 0
    width = max(len(key) for key in hf)
    for key, value in sorted(hf.items()):
        print(f"{key:<{width}}  {value}")
    print("\nderived:")
    print(f"  q/k head dim        {derived['qk_head_dim']}")
    print(f"  latent cache width  {derived['latent_cache_width']} values per token per layer")
    print(f"  softmax scale       {derived['softmax_scale']:.7f}")
    print(
        f"  layers              {derived['num_layers']} ({derived['dense_layers']} dense, {derived['moe_layers']} MoE)"
        + (f" + {derived['mtp_layers']} MTP" if derived["mtp_layers"] else "")
    )
    print(f"  YaRN policy         {derived['yarn_policy']}")
    total = _billions(derived["total_params"])
    if derived["mtp_layers"]:
        total += f" total without the MTP layer, {_billions(derived['total_params_with_mtp'])} with it"
    else:
        total += " total (no MTP layer)"
    print(f"  parameters          {total}; {_billions(derived['activated_params'])} activated")
    return 0


def _billions(count: int) -> str:
    """`671.03 B`; integer arithmetic, so a count beyond float range (10^18 layers) still prints."""
    hundredths = (count + 5 * 10**6) // 10**7
    return f"{hundredths // 100}.{hundredths % 100:02d} B"
