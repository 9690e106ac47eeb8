"""Per-rank device tables: HBM capacity, HBM bandwidth and dense matmul peak, as data.

A *rank* is what one tensor-parallel shard runs on: a logical NeuronCore (LNC=2, two physical
NeuronCore-v3 sharing a quarter of a Trainium2 chip's HBM) on trn2, one NeuronCore-v2 on trn1, one GPU on
H100/H200. Chip figures are divided evenly among the ranks that share the chip. Sources are cited in
docs/planner.md; every number here appears there with its page.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class Device:
    name: str
    rank_unit: str
    ranks_per_instance: int
    instance: str
    hbm_bytes: int  # per rank
    hbm_bytes_per_s: float  # per rank
    bf16_flops_per_s: float  # dense, per rank
    fp8_flops_per_s: float  # dense, per rank


DEVICES: dict[str, Device] = {
    "trn2": Device(
        name="trn2",
        rank_unit="LNC=2 logical NeuronCore (1/4 of a Trainium2 chip)",
        ranks_per_instance=64,
        instance="trn2.48xlarge (16 chips)",
        hbm_bytes=96 * GiB // 4,
        hbm_bytes_per_s=2.9e12 / 4,
        bf16_flops_per_s=667e12 / 4,
        fp8_flops_per_s=1299e12 / 4,
    ),
    "trn1": Device(
        name="trn1",
        rank_unit="NeuronCore-v2 (1/2 of a Trainium chip)",
        ranks_per_instance=32,
        instance="trn1.32xlarge (16 chips)",
        hbm_bytes=32 * GiB // 2,
        hbm_bytes_per_s=820e9 / 2,
        bf16_flops_per_s=190e12 / 2,
        fp8_flops_per_s=190e12 / 2,
    ),
    "h200": Device(
        name="h200",
        rank_unit="one H200 SXM GPU",
        ranks_per_instance=8,
        instance="8x H200 node",
        hbm_bytes=141_000_000_000,
        hbm_bytes_per_s=4.8e12,
        bf16_flops_per_s=989e12,
        fp8_flops_per_s=1979e12,
    ),
    "h100": Device(
        name="h100",
        rank_unit="one H100 SXM GPU",
        ranks_per_instance=8,
        instance="8x H100 node",
        hbm_bytes=80_000_000_000,
        hbm_bytes_per_s=3.35e12,
        bf16_flops_per_s=989e12,
        fp8_flops_per_s=1979e12,
    ),
}


def device(name: str) -> Device:
    """The named device; raises `KeyError` listing the known names."""
    try:
        return DEVICES[name]
    except KeyError:
        raise KeyError(f"unknown device {name!r}; known: {', '.join(sorted(DEVICES))}") from None
