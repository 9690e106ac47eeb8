"""`check_finite` decides with one `aminmax`; the reference is `torch.isfinite` on every element.

A NaN or infinity is planted at every position of tensors long enough to span several vector lanes and
a partial tail (67 x 33), in each floating dtype a checkpoint holds; each must be refused, naming the
file and tensor, and the clean tensor accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsv3_weights import CheckpointError
from dsv3_weights.validate import check_finite

FILE = Path("model-00001-of-00002.safetensors")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_every_planted_nan_or_inf_is_refused(dtype: torch.dtype) -> None:
    clean = torch.randn(67, 33).clamp(-100, 100).to(dtype)
    assert check_finite(clean, FILE, "w") is clean
    bad_values = [float("nan")] if dtype == torch.float8_e4m3fn else [float("nan"), float("inf"), -float("inf")]
    for value in bad_values:  # e4m3fn has no infinity (a cast saturates to 448)
        for position in range(clean.numel()):
            tensor = clean.clone()
            tensor.view(-1)[position] = value
            assert not bool(torch.isfinite(tensor.float()).all())  # the reference agrees it is bad
            with pytest.raises(CheckpointError, match=rf"^{FILE}: tensor 'w' holds NaN/Inf values \(1 in"):
                check_finite(tensor, FILE, "w")


def test_integers_and_empty_tensors_pass() -> None:
    assert check_finite(torch.arange(5), FILE, "ids").tolist() == [0, 1, 2, 3, 4]
    assert check_finite(torch.empty(0, 3), FILE, "empty").shape == (0, 3)
