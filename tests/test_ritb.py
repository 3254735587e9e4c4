"""Tests of the RITB block (lrti_plugin/archs/ritb_arch.py) and its window helpers.

Tiny widths (C=8, 2 heads, window 4) and odd frame sizes, so padding and shifted windows are both
exercised; everything runs on a CPU in a few seconds.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import lrti_plugin  # noqa: F401  (registers RITB; must precede the first basicsr import)
from lrti_plugin.archs.ritb_arch import RITB, RITBGroup, window_attention
from lrti_plugin.archs.window_util import window_region_mask

C, HEADS, WS = 8, 2, 4


def _block(seed: int = 0, **kwargs) -> RITB:
    torch.manual_seed(seed)
    opts = dict(num_feat=C, num_heads=HEADS, window_size=WS)
    opts.update(kwargs)
    return RITB(**opts)


def _inputs(b: int = 2, h: int = 13, w: int = 19, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, C, h, w, generator=g, dtype=dtype) for _ in range(3)]  # x, h1, h2


# ----------------------------------------------------------------------------------------------
# Naive reference: one query at a time, windows located by explicit coordinate arithmetic.
# ----------------------------------------------------------------------------------------------
def _window_cells(wy, wx, ws, s, h, w, hp, wp):
    """Real pixels of shifted window (wy, wx): (i, j, y, x, wrapped_row, wrapped_col)."""
    cells = []
    for i in range(ws):
        for j in range(ws):
            ry, rx = wy * ws + i, wx * ws + j  # position on the rolled canvas
            y, x = (ry + s) % hp, (rx + s) % wp  # where it came from
            if y < h and x < w:
                cells.append((i, j, y, x, ry + s >= hp, rx + s >= wp))
    return cells


def _naive_attention(mod, x, h1, h2, attn, normalize):
    """Reference for ``InterFrameWindowAttention`` on (B, H, W, C) inputs."""
    b, h, w, c = x.shape
    ws, s, nh = mod.window_size, mod.shift, mod.num_heads
    d = c // nh
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    span = 2 * ws - 1
    table = mod.relative_position_bias_table.view(3, span, span, nh)
    wk, wv = mod.kv.weight[:c], mod.kv.weight[c:]
    bk, bv = mod.kv.bias[:c], mod.kv.bias[c:]
    frames = (h2, h1, x)
    out = torch.zeros_like(x)
    for wy in range(hp // ws):
        for wx in range(wp // ws):
            cells = _window_cells(wy, wx, ws, s, h, w, hp, wp)
            for qi, qj, qy, qx, qwr, qwc in cells:
                keys = [(f, ki, kj, ky, kx) for f in range(3) for ki, kj, ky, kx, kwr, kwc in cells
                        if (kwr, kwc) == (qwr, qwc)]
                feats = torch.stack([frames[f][:, ky, kx] for f, _, _, ky, kx in keys], 1)  # (B, Nk, C)
                q = F.linear(x[:, qy, qx], mod.q.weight, mod.q.bias).view(b, nh, d)
                k = F.linear(feats, wk, bk).view(b, len(keys), nh, d)
                v = F.linear(feats, wv, bv).view(b, len(keys), nh, d)
                bias = torch.stack([table[f, ki - qi + ws - 1, kj - qj + ws - 1] for f, ki, kj, _, _ in keys])
                scores = torch.einsum('bhd,bnhd->bhn', q, k) / math.sqrt(d) + bias.T  # (B, nH, Nk)
                if attn == 'softmax':
                    a = scores.softmax(-1)
                else:
                    a = F.relu(scores) ** 2
                    if normalize:
                        a = a / (a.sum(-1, keepdim=True) + 1e-6)
                heads = torch.einsum('bhn,bnhd->bhd', a, v).reshape(b, c)
                out[:, qy, qx] = F.linear(heads, mod.proj.weight, mod.proj.bias)
    return out


@pytest.mark.parametrize('shift', [0, WS // 2])
@pytest.mark.parametrize('attn,normalize', [('softmax', False), ('relu2', False), ('relu2', True)])
def test_attention_matches_naive_reference(shift, attn, normalize):
    block = _block(shift=shift, attn=attn, attn_norm=normalize).double()
    x, h1, h2 = (t.permute(0, 2, 3, 1) for t in _inputs(b=1, h=7, w=10, dtype=torch.float64))
    with torch.no_grad():
        got = block.attn(x, h1, h2)
        want = _naive_attention(block.attn, x, h1, h2, attn, normalize)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# window_attention: masking, empty rows, dtypes
# ----------------------------------------------------------------------------------------------
def _qkv_mask(seed=0, nq=5, nk=7):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g) for n in (nq, nk, nk))
    bias = 5.0 + torch.rand(3, nq, nk, generator=g)  # every unmasked relu2 weight would be > 0
    mask = torch.rand(nq, nk, generator=g) > 0.5
    mask[0] = False  # one fully masked row
    mask[1] = True
    return q, k, v, bias, mask


@pytest.mark.parametrize('normalize', [False, True])
def test_relu2_masked_weights_are_exactly_zero(normalize):
    q, k, v, bias, mask = _qkv_mask()
    _, weights = window_attention(q, k, v, bias, mask, attn='relu2', normalize=normalize)
    assert torch.all(weights[..., ~mask] == 0)
    assert torch.all(weights[..., mask] > 0)


def test_block_mask_zeroes_padding_and_seam():
    mask = window_region_mask(13, 19, WS, WS // 2, 3, torch.device('cpu'))
    assert mask.shape == (4 * 5, 1, WS * WS, 3 * WS * WS)
    assert not mask.all()  # the seam and the padding are masked somewhere
    assert mask[:, 0, torch.arange(WS * WS), 2 * WS * WS + torch.arange(WS * WS)].all()  # self always allowed
    assert window_region_mask(16, 20, WS, 0, 3, torch.device('cpu')) is None


@pytest.mark.parametrize('attn,normalize', [('softmax', False), ('relu2', False), ('relu2', True)])
def test_fully_masked_row_gives_zeros_not_nan(attn, normalize):
    q, k, v, bias, mask = _qkv_mask()
    q.requires_grad_(True)
    out, weights = window_attention(q, k, v, bias, mask, attn=attn, normalize=normalize)
    assert torch.all(weights[..., 0, :] == 0) and torch.all(out[..., 0, :] == 0)
    assert torch.all(weights[..., ~mask] == 0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    if attn == 'softmax':
        torch.testing.assert_close(weights[..., 1:, :].sum(-1), torch.ones(2, 3, 4))


def test_window_attention_keeps_float64():
    q, k, v, bias, mask = (t.double() if t.is_floating_point() else t for t in _qkv_mask())
    out, weights = window_attention(q, k, v, bias, mask)
    assert out.dtype == weights.dtype == torch.float64


def test_scores_in_float32_under_bf16_autocast():
    q, k, v, bias, mask = _qkv_mask()
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, weights = window_attention(q, k, v, bias, mask)
    assert weights.dtype == torch.float32
    _, want = window_attention(q.float(), k.float(), v.float(), bias, mask)
    torch.testing.assert_close(weights, want, rtol=1e-6, atol=1e-6)  # bf16 scores would miss by ~1e-2


def test_block_under_bf16_autocast_is_finite_and_close():
    block = _block(shift=WS // 2)
    x, h1, h2 = _inputs()
    with torch.no_grad():
        want = block(x, h1, h2)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = block(x, h1, h2)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2)


# ----------------------------------------------------------------------------------------------
# The block and the group
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('shift', [0, WS // 2])
@pytest.mark.parametrize('size', [(13, 19), (3, 5), (8, 12)])
def test_output_shapes(shift, size):
    x, h1, h2 = _inputs(h=size[0], w=size[1])
    assert _block(shift=shift)(x, h1, h2).shape == x.shape
    assert RITBGroup(num_feat=C, depth=2, num_heads=HEADS, window_size=WS)(x, h1, h2).shape == x.shape


def test_missing_states_are_zeros():
    block = _block(shift=WS // 2)
    x, _, _ = _inputs()
    zeros = torch.zeros_like(x)
    torch.testing.assert_close(block(x), block(x, zeros, zeros), rtol=0, atol=0)
    with pytest.raises(ValueError, match='h1'):
        block(x, x[..., :-1])


@pytest.mark.parametrize('attn', ['relu2', 'softmax'])
def test_shifted_mask_isolates_regions(attn):
    """(0, 0) is rolled into the window that also holds column 18 (the far edge) and the padding."""
    block = _block(shift=WS // 2, attn=attn)
    x, h1, h2 = _inputs(h=13, w=19)
    base = block(x, h1, h2)
    for t in (x, h1, h2):
        t[:, :, 0, 0] += 10.0
    diff = (block(x, h1, h2) - base).abs().amax(dim=(0, 1))  # (H, W)
    seen = torch.zeros_like(diff, dtype=torch.bool)
    seen[:2, :2] = True  # its region inside the shifted window: rows 0-1, columns 0-1
    assert torch.all(diff[~seen] == 0)
    assert diff[0, 0] > 0
    if attn == 'softmax':  # relu2 may legitimately give the perturbed key zero weight
        assert torch.all(diff[seen] > 0)


def test_gated_ffn_depends_on_h1_and_mlp_does_not():
    x, h1, _ = (t.permute(0, 2, 3, 1) for t in _inputs())
    other = torch.randn_like(h1)
    with torch.no_grad():
        gated, mlp = _block(ffn='gated').ffn, _block(ffn='mlp').ffn
        assert not torch.allclose(gated(x, h1), gated(x, other))
        torch.testing.assert_close(mlp(x, h1), mlp(x, other), rtol=0, atol=0)
    assert _block(ffn='gated', gate_act='sigmoid').ffn(x, h1).shape == x.shape


def _assert_all_grads(module, *inputs):
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    for t in inputs:
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize('attn,attn_norm', [('relu2', False), ('relu2', True), ('softmax', False)])
@pytest.mark.parametrize('ffn', ['gated', 'mlp'])
def test_every_parameter_gets_a_gradient(attn, attn_norm, ffn):
    group = RITBGroup(num_feat=C, depth=2, num_heads=HEADS, window_size=WS, attn=attn, attn_norm=attn_norm, ffn=ffn)
    x, h1, h2 = (t.requires_grad_(True) for t in _inputs(h=9, w=11))
    out = group(x, h1, h2)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    _assert_all_grads(group, x, h1, h2)


@pytest.mark.parametrize('shift', [0, WS // 2])
def test_checkpointing_gives_same_output_and_gradients(shift):
    plain = _block(shift=shift, drop_path=0.2)
    ckpt = _block(shift=shift, drop_path=0.2, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    results = []
    for block in (plain, ckpt):
        block.train()
        x, h1, h2 = (t.requires_grad_(True) for t in _inputs(h=9, w=11))
        torch.manual_seed(7)  # same drop-path draws; checkpoint replays the RNG state
        out = block(x, h1, h2)
        out.square().mean().backward()
        grads = [p.grad for p in block.parameters()] + [x.grad, h1.grad, h2.grad]
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_build_from_yaml_and_state_dict_round_trip():
    from basicsr.archs import build_network

    opt = dict(type='RITB', num_feat=C, num_heads=HEADS, window_size=WS, shift=2, attn='softmax', ffn='mlp')
    block = build_network(dict(opt))
    assert isinstance(block, RITB)
    assert 'attn.relative_position_index' not in block.state_dict()  # derived, not saved
    other = build_network(dict(opt))
    other.load_state_dict(block.state_dict())
    x, h1, h2 = _inputs()
    torch.testing.assert_close(block(x, h1, h2), other(x, h1, h2))
    group = build_network(dict(type='RITBGroup', num_feat=C, depth=3, num_heads=HEADS, window_size=WS))
    assert [b.attn.shift for b in group.blocks] == [0, WS // 2, 0]


@pytest.mark.parametrize('key,value', [
    ('attn', 'relu'), ('ffn', 'glu'), ('gate_act', 'tanh'), ('num_heads', 3), ('window_size', 0),
    ('shift', WS), ('mlp_ratio', 0.0), ('drop_path', 1.0),
])
def test_bad_block_option_raises_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        _block(**{key: value})


def test_bad_option_combinations_raise():
    from basicsr.archs import build_network

    with pytest.raises(ValueError, match='attn_norm'):
        _block(attn='softmax', attn_norm=True)
    with pytest.raises(ValueError, match='depth'):
        RITBGroup(num_feat=C, depth=0, num_heads=HEADS, window_size=WS)
    with pytest.raises(ValueError, match='drop_path'):
        RITBGroup(num_feat=C, depth=2, num_heads=HEADS, window_size=WS, drop_path=[0.1])
    with pytest.raises(ValueError, match='num_heads'):
        build_network(dict(type='RITBGroup', num_feat=C, depth=2, num_heads=3, window_size=WS))
    q = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match='attn'):
        window_attention(q, q, q, attn='sparse')


def test_relu2_attention_cannot_overflow_under_float16_autocast():
    """Unnormalised relu2 weights exceed float16's range (65504) long before the scores do: the output
    must stay finite and match float32 where a float16 ``weights @ v`` would give inf."""
    from lrti_plugin.archs.ritb_arch import InterFrameWindowAttention

    torch.manual_seed(0)
    attn = InterFrameWindowAttention(C, HEADS, WS, shift=0, attn='relu2', attn_norm=False, qkv_bias=True)
    x, h1, h2 = (t.permute(0, 2, 3, 1) * 8 for t in _inputs(h=WS, w=WS))  # (B, H, W, C), large activations
    with torch.no_grad():
        want = attn(x, h1, h2)
        assert want.abs().max() > 65504  # beyond float16: a float16 ``weights @ v`` gives inf
        with torch.autocast('cpu', dtype=torch.float16):
            got = attn(x.half(), h1.half(), h2.half())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))
