"""The planner (`dsv3 plan`, `dsv3-plan`): will a layout fit a device, and how fast can a step be?

Pure arithmetic over `dsv3_config`, no torch, so it installs and answers in a second. Files, one
concern each: `devices` (HBM and bandwidth per rank, as data), `layouts` (contrib vs dsv3 placement and
formats), `weights` (per-family bytes per rank), `kv_cache` (latent cache), `scratch` (activation model and
its calibration constant), `bandwidth` (decode and prefill floors), `plan` (assembly), `search` (largest
seq_len / batch, ranked changes), `calibration` (the contrib port's published facts), `report` (the text
output), `cli` (the `dsv3-plan` command and the options `dsv3 plan` shares). The arithmetic is written out
in docs/planner.md.
"""

from dsv3_plan.devices import DEVICES, Device, device
from dsv3_plan.layouts import LAYOUT_NAMES, Layout, contrib_layout, dsv3_layout, layout_for
from dsv3_plan.plan import Plan, deployment, make_plan
from dsv3_plan.search import Change, largest_batch, largest_seq_len, ranked_changes

__all__ = [
    "DEVICES",
    "LAYOUT_NAMES",
    "Change",
    "Device",
    "Layout",
    "Plan",
    "contrib_layout",
    "deployment",
    "device",
    "dsv3_layout",
    "largest_batch",
    "largest_seq_len",
    "layout_for",
    "make_plan",
    "ranked_changes",
]
