"""`dsv3 config show PATH|PRESET [--json]`: the parsed config and its derived values."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dsv3_config import PRESETS, LayerKind, ModelConfig, count_params, load_config, preset


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = subparsers.add_parser("config", help="inspect model configurations")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print a config.json or preset with its derived values")
    show.add_argument("source", help=f"config.json, a model directory, or a preset ({', '.join(PRESETS)})")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_show)


def resolve_config(source: str) -> ModelConfig:
    """A preset name, a `config.json` path, or a directory containing one."""
    if source in PRESETS and not Path(source).exists():
        return preset(source)
    return load_config(source)


def derived_values(cfg: ModelConfig) -> dict[str, Any]:
    kinds = cfg.layer_kinds
    counts = count_params(cfg)
    return {
        "qk_head_dim": cfg.qk_head_dim,
        "latent_cache_width": cfg.latent_cache_width,
        "softmax_scale": cfg.softmax_scale,
        "num_layers": len(kinds),
        "dense_layers": sum(kind is LayerKind.DENSE for kind in kinds),
        "moe_layers": sum(kind is LayerKind.MOE for kind in kinds),
        "yarn_policy": cfg.yarn_policy if cfg.uses_yarn else "none",
        "total_params": counts.total,
        "activated_params": counts.activated,
    }


def _show(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.source)
    derived = derived_values(cfg)
    if args.json:
        print(json.dumps({"config": cfg.to_hf(), "derived": derived}, indent=2, sort_keys=True))
        return 0
    width = max(len(key) for key in cfg.to_hf())
    for key, value in sorted(cfg.to_hf().items()):
        print(f"{key:<{width}}  {value}")
    print("\nderived:")
    print(f"  q/k head dim        {derived['qk_head_dim']}")
    print(f"  latent cache width  {derived['latent_cache_width']} values per token per layer")
    print(f"  softmax scale       {derived['softmax_scale']:.7f}")
    print(
        f"  layers              {derived['num_layers']} ({derived['dense_layers']} dense, {derived['moe_layers']} MoE)"
    )
    print(f"  YaRN policy         {derived['yarn_policy']}")
    print(
        f"  parameters          {derived['total_params'] / 1e9:.2f} B total, "
        f"{derived['activated_params'] / 1e9:.2f} B activated"
    )
    return 0
