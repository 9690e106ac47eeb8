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


def _per_rank(
    name: str, rank_unit: str, instance: str, ranks: tuple[int, int], chip: tuple[int, float, float, float]
) -> Device:
    """A device from its chip's figures, divided evenly among the `ranks = (per instance, per chip)`;
    `chip = (HBM bytes, HBM bytes/s, dense BF16 FLOP/s, dense FP8 FLOP/s)`."""
    per_instance, per_chip = ranks
    hbm, bandwidth, bf16, fp8 = chip
    return Device(name, rank_unit, per_instance, instance, hbm // per_chip, bandwidth / per_chip, bf16 / per_chip,
                  fp8 / per_chip)


_TABLE = (
    _per_rank("trn2", "LNC=2 logical NeuronCore (1/4 of a Trainium2 chip)", "trn2.48xlarge (16 chips)", (64, 4),
              (96 * GiB, 2.9e12, 667e12, 1299e12)),
    _per_rank("trn1", "NeuronCore-v2 (1/2 of a Trainium chip)", "trn1.32xlarge (16 chips)", (32, 2),
              (32 * GiB, 820e9, 190e12, 190e12)),
    _per_rank("h200", "one H200 SXM GPU", "8x H200 node", (8, 1), (141_000_000_000, 4.8e12, 989e12, 1979e12)),
    _per_rank("h100", "one H100 SXM GPU", "8x H100 node", (8, 1), (80_000_000_000, 3.35e12, 989e12, 1979e12)),
)
DEVICES: dict[str, Device] = {dev.name: dev for dev in _TABLE}


def device(name: str) -> Device:
    """The named device; raises `KeyError` listing the known names."""
    try:
        return DEVICES[name]
    except KeyError:
        raise KeyError(f"unknown device {name!r}; known: {', '.join(sorted(DEVICES))}") from None
