"""The blocked (online-softmax) form of both MLA attention forms, the prefill path beyond one key block.

References: a float64 softmax written here (independent of the package), the unblocked fp32 form of the same
function (one block: the path shorter prompts take), and transformers' `DeepseekV3Attention` through the
module's public steps. Bound 1e-5 absolute on outputs of magnitude ~1 (fp32): the blocked form regroups the
same sums, each weight taking at most one extra rescaling per block (2u relative each, u = 2^-24; 5 blocks
here), so the difference is rounding: measured 6.0e-7 from the unblocked form and 1.1e-6 (expanded) / 9.3e-7
(absorbed) from float64, outputs up to 3.1; the unblocked form is itself 1.1e-6 from float64.
"""

from __future__ import annotations

import pytest
import torch
from mla_cases import CONFIGS

from dsv3_mla import KeyVisibility, MultiHeadLatentAttention, absorbed_attention, expanded_attention
from dsv3_mla.attention_blocked import Visibility, is_blocked
from dsv3_testing.hf_attention import HfAttentionRunner, hf_attention

TOL = 1e-5
B, S, H, N, R, V, C = 2, 300, 3, 16, 8, 12, 32
BLOCK = 64  # 300 keys: 4 full blocks and one of 44
UNBLOCKED = 10**6


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "q_nope": (B, S, H, N),
        "q_pe": (B, S, H, R),
        "k_nope": (B, S, H, N),
        "k_pe": (B, S, R),
        "v": (B, S, H, V),
        "kv": (B, S, C + R),
        "w": (H, N + V, C),
    }
    x = {name: torch.randn(*shape, generator=gen) for name, shape in shapes.items()}
    x["w"] = x["w"] / C**0.5  # decompressed keys and values of magnitude ~1, as the expanded inputs
    return x


def _visibility() -> KeyVisibility:
    """Causal by position, row 1 right-padded to 250 real tokens, row 0 starting at position 5."""
    positions_BS = torch.stack([torch.arange(5, 5 + S), torch.arange(S)])
    valid_BS = torch.arange(S)[None, :] < torch.tensor([S, 250])[:, None]
    return KeyVisibility(positions_BS, positions_BS, valid_BS)


def _softmax64(scores_BHST: torch.Tensor, visible_BST: torch.Tensor) -> torch.Tensor:
    scores = scores_BHST.double().masked_fill(~visible_BST[:, None], float("-inf"))
    return torch.softmax(scores, dim=-1)


def _expanded64(x: dict[str, torch.Tensor], visible_BST: torch.Tensor, scale: float) -> torch.Tensor:
    scores = torch.einsum("bshn,bthn->bhst", x["q_nope"].double(), x["k_nope"].double())
    scores = (scores + torch.einsum("bshr,btr->bhst", x["q_pe"].double(), x["k_pe"].double())) * scale
    return torch.einsum("bhst,bthv->bshv", _softmax64(scores, visible_BST), x["v"].double())


def _absorbed64(x: dict[str, torch.Tensor], visible_BST: torch.Tensor, scale: float) -> torch.Tensor:
    """Absorbed attention by its definition: decompress K = [c W_UK^T | k_pe], V = c W_UV^T per head."""
    c_BTC, k_pe_BTr, w = x["kv"][..., :C].double(), x["kv"][..., C:].double(), x["w"].double()
    k_nope_BTHn = torch.einsum("btc,hnc->bthn", c_BTC, w[:, :N])
    v_BTHv = torch.einsum("btc,hvc->bthv", c_BTC, w[:, N:])
    scores = torch.einsum("bshn,bthn->bhst", x["q_nope"].double(), k_nope_BTHn)
    scores = (scores + torch.einsum("bshr,btr->bhst", x["q_pe"].double(), k_pe_BTr)) * scale
    return torch.einsum("bhst,bthv->bshv", _softmax64(scores, visible_BST), v_BTHv)


def _expanded(x: dict[str, torch.Tensor], visible: Visibility, key_block: int) -> torch.Tensor:
    return expanded_attention(x["q_nope"], x["q_pe"], x["k_nope"], x["k_pe"], x["v"], visible, 0.3, key_block)


def _absorbed(x: dict[str, torch.Tensor], visible: Visibility, key_block: int) -> torch.Tensor:
    return absorbed_attention(x["q_nope"], x["q_pe"], x["kv"], x["w"], visible, 0.3, key_block)


@pytest.mark.parametrize("form", ["expanded", "absorbed"])
def test_blocked_matches_float64_softmax_and_the_unblocked_form(form: str) -> None:
    x, visibility = _inputs(seed=1), _visibility()
    run, reference = (_expanded, _expanded64) if form == "expanded" else (_absorbed, _absorbed64)
    real_rows = [(0, slice(None)), (1, slice(0, 250))]  # padding queries of row 1 see nothing real: unspecified
    blocked = run(x, visibility, BLOCK)
    want = reference(x, visibility.dense(), 0.3)
    for row, rows in real_rows:
        torch.testing.assert_close(blocked[row, rows].double(), want[row, rows], rtol=0, atol=TOL)
    torch.testing.assert_close(blocked, run(x, visibility.dense(), UNBLOCKED), rtol=0, atol=TOL)
    torch.testing.assert_close(run(x, visibility.dense(), BLOCK), blocked, rtol=0, atol=0)  # dense = factored


@pytest.mark.parametrize("form", ["expanded", "absorbed"])
def test_blocked_without_mask_and_with_hidden_rows(form: str) -> None:
    """No mask (all visible) and a query that sees no key at all: finite, equal to the unblocked form."""
    x = _inputs(seed=2)
    run = _expanded if form == "expanded" else _absorbed
    torch.testing.assert_close(run(x, None, BLOCK), run(x, None, UNBLOCKED), rtol=0, atol=TOL)
    visible_BST = torch.ones(B, S, S, dtype=torch.bool).tril()
    visible_BST[1, 7] = False
    blocked = run(x, visible_BST, BLOCK)
    assert bool(torch.isfinite(blocked).all())
    torch.testing.assert_close(blocked, run(x, visible_BST, UNBLOCKED), rtol=0, atol=TOL)


def test_blocked_rule_and_bad_block() -> None:
    assert is_blocked(1025, 1025, 1024)
    assert not is_blocked(1024, 32768, 1024)  # a chunk of one block over a long cache: unblocked
    assert not is_blocked(1, 32768, 1024)  # decode
    with pytest.raises(ValueError, match="key_block"):
        is_blocked(10, 10, 0)


@pytest.mark.parametrize("path", ["expanded", "absorbed"])
def test_module_steps_blocked_match_transformers(path: str) -> None:
    """A 150-token prompt through `project`, blocked `attend` (key blocks of 32) and `output` against HF."""
    cfg = CONFIGS["tiny"]
    hf = hf_attention(cfg, seed=21)
    mla = MultiHeadLatentAttention(cfg).eval()
    mla.load_state_dict(hf.state_dict(), strict=True)
    hidden_1SD = torch.randn(1, 150, cfg.hidden_size, generator=torch.Generator().manual_seed(22))
    positions_1S = torch.arange(150)[None]
    with torch.no_grad():
        q_nope, q_pe, kv_1SC = mla.project(hidden_1SD, positions_1S)
        visible = KeyVisibility(positions_1S, positions_1S)
        ours = mla.output(mla.attend(q_nope, q_pe, kv_1SC, visible, path, key_block=32))
    torch.testing.assert_close(ours, HfAttentionRunner(hf).prefill(hidden_1SD), rtol=0, atol=TOL)
