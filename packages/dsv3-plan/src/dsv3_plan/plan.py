"""One deployment plan: per-rank memory by family, whether it fits, and the step-time floors.

    total = weights (per family) + latent cache + scratch   vs   the device's HBM per rank

Everything is integer bytes per rank; the CLI prints decimal GB (1e9) and GiB where devices quote GiB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dsv3_config import DeploymentConfig, ModelConfig
from dsv3_plan.bandwidth import StepFloor, decode_floor, decode_reads, prefill_floor
from dsv3_plan.devices import Device
from dsv3_plan.kv_cache import latent_cache_bytes
from dsv3_plan.layouts import Layout
from dsv3_plan.scratch import K_SCRATCH, experts_materialized, scratch_bytes
from dsv3_plan.weights import FamilyWeights, family_weights


@dataclass(frozen=True)
class Plan:
    model: ModelConfig
    deployment: DeploymentConfig
    layout: Layout
    device: Device
    families: tuple[FamilyWeights, ...]
    kv_cache_bytes: int
    scratch_bytes: int
    decode_reads: dict[str, int]
    decode: StepFloor
    prefill: StepFloor

    @property
    def weight_bytes(self) -> int:
        return sum(f.bytes_per_rank for f in self.families)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_cache_bytes + self.scratch_bytes

    @property
    def free_bytes(self) -> int:
        """HBM left per rank; negative when it does not fit."""
        return self.device.hbm_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.free_bytes >= 0

    def family(self, name: str) -> FamilyWeights:
        for fam in self.families:
            if fam.name == name:
                return fam
        raise KeyError(f"no family {name!r}; known: {', '.join(f.name for f in self.families)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as integers, seconds as floats."""
        dep = self.deployment
        return {
            "device": asdict(self.device),
            "layout": asdict(self.layout),
            "deployment": dep.model_dump(),
            "weights_per_rank": {f.name: asdict(f) for f in self.families},
            "weight_bytes": self.weight_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "scratch_bytes": self.scratch_bytes,
            "scratch_model": {
                "k_scratch": K_SCRATCH,
                "experts_materialized": experts_materialized(self.model, self.layout, dep),
                "tokens": dep.batch_size * dep.seq_len + dep.batch_size,
            },
            "total_bytes": self.total_bytes,
            "hbm_bytes": self.device.hbm_bytes,
            "free_bytes": self.free_bytes,
            "fits": self.fits,
            "decode_reads": dict(self.decode_reads),
            "decode": asdict(self.decode),
            "prefill": asdict(self.prefill),
        }


def deployment(cfg: ModelConfig, layout: Layout, **fields: Any) -> DeploymentConfig:
    """A `DeploymentConfig` validated for `cfg` and `layout` (the contrib port has no expert parallelism)."""
    dep = DeploymentConfig(**fields).validate_for(cfg)
    if dep.ep > 1 and not layout.expert_parallel:
        raise ValueError(f"ep ({dep.ep}) > 1 but layout {layout.name!r} splits experts by tp only")
    return dep


def make_plan(cfg: ModelConfig, dep: DeploymentConfig, layout: Layout, dev: Device) -> Plan:
    families = family_weights(cfg, layout, dep)
    return Plan(
        model=cfg,
        deployment=dep,
        layout=layout,
        device=dev,
        families=families,
        kv_cache_bytes=latent_cache_bytes(cfg, dep.batch_size, dep.seq_len, layout.cache_copies),
        scratch_bytes=scratch_bytes(cfg, layout, dep),
        decode_reads=decode_reads(cfg, layout, dep, families),
        decode=decode_floor(cfg, layout, dep, families, dev),
        prefill=prefill_floor(cfg, layout, dep, families, dev),
    )
