"""dsv3-config: DeepSeek-V3-family configurations, validated and derived, without torch."""

from dsv3_config.deployment import DeploymentConfig
from dsv3_config.errors import ConfigError
from dsv3_config.hf_io import RECOGNIZED_UNUSED_KEYS, UnusedConfigKeysWarning, load_config, save_config
from dsv3_config.model_config import LayerKind, ModelConfig
from dsv3_config.param_count import ParamCounts, count_params
from dsv3_config.presets import PRESETS, preset
from dsv3_config.quantization import Fp8BlockQuantization
from dsv3_config.rope_scaling import YarnPolicy, YarnScaling
from dsv3_config.shard_plan import REPLICATED, MeshCoordinate, Placement, ShardPlan, Split, prefixed
from dsv3_config.yarn_math import yarn_get_mscale

__all__ = [
    "PRESETS",
    "RECOGNIZED_UNUSED_KEYS",
    "REPLICATED",
    "ConfigError",
    "DeploymentConfig",
    "Fp8BlockQuantization",
    "LayerKind",
    "MeshCoordinate",
    "ModelConfig",
    "ParamCounts",
    "Placement",
    "ShardPlan",
    "Split",
    "UnusedConfigKeysWarning",
    "YarnPolicy",
    "YarnScaling",
    "count_params",
    "load_config",
    "prefixed",
    "preset",
    "save_config",
    "yarn_get_mscale",
]
