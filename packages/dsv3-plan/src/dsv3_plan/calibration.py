"""The contrib port's published facts, and the scratch constant interval they imply.

Facts (docs/reference-port.md, from the port's README): trn2.48xlarge, TP 64, LNC 2, BF16, batch 1;
64 per-rank weight files of "21.4 GB"; seq_len 512 runs; seq_len 1024 compiles but fails to load with
"TKG model 23.1 GB + CTE scratchpad > 24 GB HBM per NC pair".

Units, reasoned out in docs/planner.md: the per-rank weights are 23.21e9 bytes = 21.62 GiB, so "21.4 GB" is a
binary size (within 1%; read as 1e9 it would be 8% off). "24 GB" per NC pair is a quarter of 96 GiB,
binary as well. "TKG model 23.1 GB" matches weights plus the doubled cache at 1024, 23.36e9 bytes, read
as decimal (read as GiB it would be 24.8e9, 6% above anything resident in the decode graph).
"""

from __future__ import annotations

from dsv3_config import ModelConfig
from dsv3_plan.devices import GiB, device
from dsv3_plan.layouts import contrib_layout
from dsv3_plan.plan import deployment, make_plan
from dsv3_plan.scratch import scratch_bytes_per_token

PUBLISHED_WEIGHT_FILE_BYTES = 21.4 * GiB
PUBLISHED_TKG_MODEL_BYTES = 23.1e9
PUBLISHED_FITS_SEQ_LEN = 512
PUBLISHED_FAILS_SEQ_LEN = 1024
CONTRIB_TP = 64


def calibration_window(cfg: ModelConfig) -> tuple[float, float]:
    """`(k_low, k_high)`: the scratch constants for which `cfg` (V3) fits at 512 and not at 1024 on trn2.

    Resident = weights + cache from this planner; the scratch of `tokens = seq_len + 1` tokens must exceed
    the HBM left at 1024 and fit in the HBM left at 512.
    """
    layout, dev = contrib_layout(), device("trn2")
    bounds = []
    for seq_len in (PUBLISHED_FAILS_SEQ_LEN, PUBLISHED_FITS_SEQ_LEN):
        dep = deployment(cfg, layout, tp=CONTRIB_TP, seq_len=seq_len, weight_dtype="bfloat16")
        plan = make_plan(cfg, dep, layout, dev)
        left = dev.hbm_bytes - plan.weight_bytes - plan.kv_cache_bytes
        bounds.append(left / ((seq_len + 1) * scratch_bytes_per_token(cfg, layout, dep, k=1.0)))
    return bounds[0], bounds[1]
