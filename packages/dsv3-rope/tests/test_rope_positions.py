"""Per-row positions: each batch row is rotated by its own positions (docs/reference-port.md defect #1).

The reference is the closed form: each adjacent pair (x0, x1) is the complex number x0 + i x1,
multiplied by exp(i * position * inv_freq) in float64.
"""

from __future__ import annotations

import torch

from dsv3_config import preset
from dsv3_rope import RotaryEmbedding, apply_rotary, rope_inv_freq

CFG = preset("tiny")  # YaRN factor 4, rope dim 8
D = CFG.qk_rope_head_dim
# fp32 rotation vs float64 closed form with |x| ~ 1 and positions < 1024: ulp-level, 1e-5 is ample.
ATOL = 1e-5


def closed_form(x_BSHD: torch.Tensor, position_ids_BS: torch.Tensor) -> torch.Tensor:
    inv_freq = rope_inv_freq(CFG).double()
    angles_BSF = position_ids_BS.double()[..., None] * inv_freq
    rot_BS1F = torch.polar(torch.ones_like(angles_BSF), angles_BSF)[:, :, None, :]
    pairs = torch.view_as_complex(x_BSHD.double().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * rot_BS1F).flatten(-2)


def rotate(x_BSHD: torch.Tensor, position_ids_BS: torch.Tensor) -> torch.Tensor:
    cos, sin = RotaryEmbedding(CFG)(position_ids_BS)
    return apply_rotary(x_BSHD, cos, sin)


def test_decode_rows_at_positions_3_and_11() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4, D)
    positions = torch.tensor([[3], [11]])
    out = rotate(x, positions)
    torch.testing.assert_close(out.double(), closed_form(x, positions), rtol=0, atol=ATOL)
    for row in range(2):  # each row alone gives the same answer
        torch.testing.assert_close(
            out[row : row + 1], rotate(x[row : row + 1], positions[row : row + 1]), rtol=0, atol=0
        )
    # The contrib port's bug (row 0's positions for every row) would be caught: it moves row 1 by far more than ATOL.
    wrong = closed_form(x[1:], positions[:1])
    assert (out[1:].double() - wrong).abs().max() > 0.1


def test_left_padded_prefill_rotates_each_row_by_its_own_positions() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 8, 3, D)
    # Row 0: 3 pads (HF gives pads position 1) then 5 tokens at 0..4; row 1: 8 tokens at 0..7.
    positions = torch.tensor([[1, 1, 1, 0, 1, 2, 3, 4], list(range(8))])
    out = rotate(x, positions)
    torch.testing.assert_close(out.double(), closed_form(x, positions), rtol=0, atol=ATOL)
    row0_alone = rotate(x[:1, 3:], torch.arange(5)[None])
    torch.testing.assert_close(out[:1, 3:], row0_alone, rtol=0, atol=0)


def test_large_positions_and_bf16_inputs() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 2, D)
    positions = torch.tensor([[0, 1000, 32767], [5, 20000, 32000]])
    torch.testing.assert_close(rotate(x, positions).double(), closed_form(x, positions), rtol=0, atol=ATOL * 10)
    out_bf16 = rotate(x.bfloat16(), positions)
    assert out_bf16.dtype == torch.bfloat16
    # bf16 input rounding (2^-9 relative) plus one bf16 output rounding: 2^-7 absolute for |x| < 4.
    torch.testing.assert_close(out_bf16.double(), closed_form(x, positions), rtol=0, atol=2**-6 * 4)
