"""Refocused intra&inter-frame transformer block (RITB) and its residual group.

The block updates the current features ``x`` of one propagation branch at frame t, attending over
3-frame windows that hold the branch's warped outputs at t-2 and t-1 (``h2``, ``h1``) and ``x``
itself (method.md, section 3). Two changes over MIA-VSR's block, each switchable for ablation:

* ``attn: relu2``: attention weights ``relu(QK^T/sqrt(d) + bias)**2`` instead of a softmax, so
  unrelated or misaligned keys get exactly zero weight;
* ``ffn: gated``: the feed-forward hidden units are gated by the aligned previous state ``h1``.

Glossary: B batch, C channels, H, W frame size (Hp, Wp padded), nW windows, nH heads, N tokens
(Nq = ws*ws queries, Nk = 3*ws*ws keys per window), d = C / nH.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from basicsr.archs.swinir_arch import DropPath
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.utils.checkpoint import checkpoint

from lrti_plugin.archs.propagation_util import autocast_device
from lrti_plugin.utils.validate import expect_choice

from .window_util import (
    frames_to_windows,
    pad_to_window,
    padded_size,
    relative_position_index,
    window_region_mask,
    windows_to_frame,
)

_ATTN = ('relu2', 'softmax')
_FFN = ('gated', 'mlp')
_GATE_ACT = ('relu2', 'sigmoid')
_NUM_FRAMES = 3  # key frames per window: h2, h1, x


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     mask: Optional[torch.Tensor] = None, attn: str = 'relu2', normalize: bool = False,
                     eps: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``Nq`` queries over ``Nk`` keys with an additive bias and a boolean mask.

    Scores and weights are computed in float32 (float64 for float64 inputs) with autocast disabled,
    whatever the input dtype. ``weights @ v`` runs in ``v``'s dtype, except float16: unnormalised relu2
    weights overflow its range (scores of 256 give weights of 65536 > 65504; a sum over keys much
    sooner), so there it runs in float32 and the output stays float32. Masked-out keys get exactly
    zero weight, and a row with no allowed key gives zero weights and a zero output (never NaN),
    for both activations.

    Args:
        q: (..., Nq, d) queries (unscaled).
        k: (..., Nk, d) keys.
        v: (..., Nk, dv) values.
        bias: Additive score bias broadcastable to (..., Nq, Nk), e.g. (nH, Nq, Nk); or None.
        mask: Boolean, broadcastable to (..., Nq, Nk), True = the key may be attended; or None.
        attn: ``relu2``: ``relu(s)**2``; ``softmax``: ``softmax(s)`` over keys.
        normalize: relu2 only: divide each row by (row sum + ``eps``).
        eps: See ``normalize``.

    Returns:
        out: (..., Nq, dv) in ``v``'s dtype (float32 for float16 ``v``).
        weights: (..., Nq, Nk) float32 (float64) attention weights.
    """
    expect_choice('attn', attn, _ATTN)
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(device_type=autocast_device(q), enabled=False):
        scores = (q.to(dtype) * q.shape[-1]**-0.5) @ k.to(dtype).transpose(-2, -1)  # (..., Nq, Nk)
        if bias is not None:
            scores = scores + bias.to(dtype)
        if attn == 'relu2':
            weights = F.relu(scores).square()
            if mask is not None:
                weights = weights.masked_fill(~mask, 0.0)
            if normalize:
                weights = weights / (weights.sum(-1, keepdim=True) + eps)
        else:
            weights = _masked_softmax(scores, mask)
        out_dtype = torch.float32 if v.dtype == torch.float16 else v.dtype
        out = weights.to(out_dtype) @ v.to(out_dtype)
    return out, weights


def _masked_softmax(scores: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over the last axis; masked keys and fully masked rows end at exactly zero."""
    if mask is None:
        return scores.softmax(-1)
    # A fully masked row would be softmax(-inf, ..., -inf) = NaN (and NaN gradients): give it finite
    # scores, then zero it with the mask.
    scores = scores.masked_fill(~mask, float('-inf'))
    scores = scores.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return scores.softmax(-1).masked_fill(~mask, 0.0)


class InterFrameWindowAttention(nn.Module):
    """Window attention: current-frame queries over the same window in (h2, h1, x).

    Inputs are padded with zeros to a multiple of ``window_size`` and, for ``shift > 0``, rolled by
    ``-shift``; padded and wrapped-around keys are masked (:func:`window_region_mask`), so the padding
    values never reach a real token. The learned bias table is (3 * (2ws-1)**2, nH): one block of
    spatial offsets (key minus query) per key frame (:func:`relative_position_index`).

    Args:
        dim: Channels C.
        num_heads: Heads nH; must divide ``dim``.
        window_size: Window side ws.
        shift: Cyclic shift in [0, ws).
        attn: ``relu2`` | ``softmax``.
        attn_norm: relu2 only: divide each weight row by its sum plus eps.
        qkv_bias: Biases in the q and kv projections.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, attn: str, attn_norm: bool,
                 qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.attn = attn
        self.attn_norm = attn_norm
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        span = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(_NUM_FRAMES * span * span, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer('relative_position_index', relative_position_index(window_size, _NUM_FRAMES),
                             persistent=False)

    def position_bias(self) -> torch.Tensor:
        """(nH, Nq, Nk) learned bias for every (query, key) pair of a window."""
        nq, nk = self.relative_position_index.shape
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (Nq*Nk, nH)
        return bias.view(nq, nk, self.num_heads).permute(2, 0, 1)  # (nH, Nq, Nk)

    def forward(self, x: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        """Attend from ``x`` to (h2, h1, x).

        Args:
            x: (B, H, W, C) normalised current features (queries, and keys of frame 2).
            h1: (B, H, W, C) normalised warped state from t-1 (keys of frame 1).
            h2: (B, H, W, C) normalised warped state from t-2 (keys of frame 0).

        Returns:
            (B, H, W, C) attention output (after the output projection).
        """
        b, h, w, c = x.shape
        ws, s, nh = self.window_size, self.shift, self.num_heads
        hp, wp = padded_size(h, w, ws)
        frames = pad_to_window(torch.stack((h2, h1, x), dim=1), ws)  # (B, 3, Hp, Wp, C)
        if s:
            frames = torch.roll(frames, shifts=(-s, -s), dims=(2, 3))  # (B, 3, Hp, Wp, C)
        tokens = frames_to_windows(frames, ws)  # (B, nW, Nk, C)
        nw, nk, nq = tokens.shape[1], tokens.shape[2], ws * ws
        q = self.q(tokens[:, :, nk - nq:])  # (B, nW, Nq, C): the current frame's tokens
        q = q.view(b, nw, nq, nh, c // nh).transpose(2, 3)  # (B, nW, nH, Nq, d)
        kv = self.kv(tokens).view(b, nw, nk, 2, nh, c // nh)  # (B, nW, Nk, 2, nH, d)
        k, v = kv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # (B, nW, nH, Nk, d) each
        mask = window_region_mask(h, w, ws, s, _NUM_FRAMES, x.device)  # (nW, 1, Nq, Nk) or None
        out, _ = window_attention(q, k, v, self.position_bias(), mask, self.attn, self.attn_norm)
        out = out.transpose(2, 3).reshape(b, nw, nq, c)  # (B, nW, Nq, C)
        if out.dtype == torch.float32 and v.dtype == torch.float16:
            # float16 autocast: the unnormalised output may exceed float16's range; project it in float32.
            with torch.autocast(device_type=autocast_device(out), enabled=False):
                out = self.proj(out)
        else:
            out = self.proj(out)
        out = windows_to_frame(out, ws, hp, wp)  # (B, Hp, Wp, C)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))  # (B, Hp, Wp, C)
        return out[:, :h, :w]  # (B, H, W, C)


class GatedFFN(nn.Module):
    """Refocused gated unit: ``fc2(gelu(fc1(x)) * act(gate(LN(h1))))``.

    Args:
        dim: Channels C.
        hidden: Hidden width.
        gate_act: ``relu2`` (``relu(.)**2``) | ``sigmoid``.
    """

    def __init__(self, dim: int, hidden: int, gate_act: str):
        super().__init__()
        self.gate_act = gate_act
        self.fc1 = nn.Linear(dim, hidden)
        self.norm_gate = nn.LayerNorm(dim)
        self.gate = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h1: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) normalised ``x`` and raw ``h1`` -> (B, H, W, C)."""
        g = self.gate(self.norm_gate(h1))  # (B, H, W, hidden)
        g = F.relu(g).square() if self.gate_act == 'relu2' else torch.sigmoid(g)
        return self.fc2(F.gelu(self.fc1(x)) * g)


class Mlp(nn.Module):
    """Plain feed-forward ``fc2(gelu(fc1(x)))`` (the ``ffn: mlp`` ablation; ignores ``h1``).

    Args:
        dim: Channels C.
        hidden: Hidden width.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h1: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, H, W, C) normalised ``x`` -> (B, H, W, C); ``h1`` is unused."""
        return self.fc2(F.gelu(self.fc1(x)))


def _check_block_options(num_feat: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float,
                         attn: str, attn_norm: bool, ffn: str, gate_act: str, drop_path: float) -> None:
    """Raise ValueError naming the first bad constructor key of :class:`RITB`."""
    expect_choice('attn', attn, _ATTN)
    expect_choice('ffn', ffn, _FFN)
    expect_choice('gate_act', gate_act, _GATE_ACT)
    if num_feat < 1:
        raise ValueError(f'num_feat: must be positive, got {num_feat}')
    if num_heads < 1 or num_feat % num_heads:
        raise ValueError(f'num_heads: must be positive and divide num_feat={num_feat}, got {num_heads}')
    if window_size < 1:
        raise ValueError(f'window_size: must be positive, got {window_size}')
    if not 0 <= shift < window_size:
        raise ValueError(f'shift: must be in [0, window_size={window_size}), got {shift}')
    if mlp_ratio <= 0 or round(mlp_ratio * num_feat) < 1:
        raise ValueError(f'mlp_ratio: must give a positive hidden width, got {mlp_ratio}')
    if attn_norm and attn != 'relu2':
        raise ValueError(f'attn_norm: only defined for attn=relu2, got attn={attn!r}')
    if not 0 <= drop_path < 1:
        raise ValueError(f'drop_path: must be in [0, 1), got {drop_path}')


def _states_or_zeros(x: torch.Tensor, h1: Optional[torch.Tensor],
                     h2: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Missing states (clip start) are zeros, so None and a zero tensor give the same output."""
    states = []
    for name, h in (('h1', h1), ('h2', h2)):
        if h is None:
            h = torch.zeros_like(x)
        elif h.shape != x.shape:
            raise ValueError(f'{name}: expected shape {tuple(x.shape)} like x, got {tuple(h.shape)}')
        states.append(h)
    return states[0], states[1]


@ARCH_REGISTRY.register()
class RITB(nn.Module):
    """Refocused intra&inter-frame transformer block; updates only the current stream ``x``.

    ``x = x + attn(LN(x); LN_m(h2), LN_m(h1), LN(x))`` then ``x = x + ffn(LN2(x), h1)``: queries come
    from the ws*ws current tokens of a window, keys and values from its 3*ws*ws tokens of (h2, h1, x).
    Any H, W: inputs are zero-padded to a multiple of ``window_size`` and cropped back; padded keys
    are masked, so the padding never changes the output (see :mod:`window_util`).

    Args:
        num_feat (int): Channels C. Default: 120.
        num_heads (int): Attention heads nH; must divide ``num_feat``. Default: 6.
        window_size (int): Window side ws. Default: 8.
        shift (int): Cyclic window shift; 0 or ws // 2 on alternate blocks (any value in [0, ws)
            is valid). Default: 0.
        mlp_ratio (float): FFN hidden width = round(mlp_ratio * num_feat). Default: 2.
        attn (str): ``relu2`` (weights ``relu(s)**2``) | ``softmax``. Default: ``relu2``.
        attn_norm (bool): relu2 only: divide each weight row by (row sum + 1e-6). Default: False.
        ffn (str): ``gated`` (hidden units gated by ``h1``) | ``mlp`` (plain). Default: ``gated``.
        gate_act (str): Gate activation of ``ffn: gated``: ``relu2`` | ``sigmoid``. Default: ``relu2``.
        qkv_bias (bool): Biases in the q and kv projections. Default: True.
        drop_path (float): Stochastic depth rate of both residual branches (training only). Default: 0.
        use_checkpoint (bool): Recompute the block in backward (torch.utils.checkpoint, non-reentrant)
            to save activation memory. Default: False.
    """

    def __init__(self, num_feat: int = 120, num_heads: int = 6, window_size: int = 8, shift: int = 0,
                 mlp_ratio: float = 2.0, attn: str = 'relu2', attn_norm: bool = False, ffn: str = 'gated',
                 gate_act: str = 'relu2', qkv_bias: bool = True, drop_path: float = 0.0,
                 use_checkpoint: bool = False):
        super().__init__()
        _check_block_options(num_feat, num_heads, window_size, shift, mlp_ratio, attn, attn_norm, ffn, gate_act,
                             drop_path)
        self.use_checkpoint = use_checkpoint
        hidden = round(mlp_ratio * num_feat)
        self.norm1 = nn.LayerNorm(num_feat)
        self.norm_mem = nn.LayerNorm(num_feat)  # shared by h1 and h2: both are this branch's outputs
        self.attn = InterFrameWindowAttention(num_feat, num_heads, window_size, shift, attn, attn_norm, qkv_bias)
        self.norm2 = nn.LayerNorm(num_feat)
        self.ffn = GatedFFN(num_feat, hidden, gate_act) if ffn == 'gated' else Mlp(num_feat, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h1: Optional[torch.Tensor] = None,
                h2: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Update the current features.

        Args:
            x: (B, C, H, W) current features.
            h1: (B, C, H, W) branch output at t-1 warped to t; None means zeros (clip start).
            h2: (B, C, H, W) branch output at t-2 warped to t; None means zeros.

        Returns:
            (B, C, H, W) updated current features.
        """
        h1, h2 = _states_or_zeros(x, h1, h2)
        x, h1, h2 = (t.permute(0, 2, 3, 1) for t in (x, h1, h2))  # (B, H, W, C) each
        return self.forward_tokens(x, h1, h2).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)

    def forward_tokens(self, x: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        """Channel-last forward (used by :class:`RITBGroup`): three (B, H, W, C) -> (B, H, W, C)."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._block, x, h1, h2, use_reentrant=False)
        return self._block(x, h1, h2)

    def _block(self, x: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), self.norm_mem(h1), self.norm_mem(h2)))
        x = x + self.drop_path(self.ffn(self.norm2(x), h1))
        return x


@ARCH_REGISTRY.register()
class RITBGroup(nn.Module):
    """Residual group: ``x + conv3x3(RITB_depth(...RITB_1(x; h1, h2)))``, shifts 0, ws//2, 0, ...

    Every block sees the same warped states ``h1``, ``h2``; only ``x`` flows through the blocks.

    Args:
        num_feat (int): Channels C. Default: 120.
        depth (int): Number of RITBs. Default: 6.
        num_heads (int): Attention heads; must divide ``num_feat``. Default: 6.
        window_size (int): Window side ws. Default: 8.
        mlp_ratio (float): FFN hidden width = round(mlp_ratio * num_feat). Default: 2.
        attn (str): ``relu2`` | ``softmax``. Default: ``relu2``.
        attn_norm (bool): relu2 only: row-normalised weights. Default: False.
        ffn (str): ``gated`` | ``mlp``. Default: ``gated``.
        gate_act (str): ``relu2`` | ``sigmoid``. Default: ``relu2``.
        qkv_bias (bool): Biases in the q and kv projections. Default: True.
        drop_path (float | list[float]): Stochastic depth rate, one for all blocks or one per block.
            Default: 0.
        use_checkpoint (bool): Gradient checkpointing of every block. Default: False.
    """

    def __init__(self, num_feat: int = 120, depth: int = 6, num_heads: int = 6, window_size: int = 8,
                 mlp_ratio: float = 2.0, attn: str = 'relu2', attn_norm: bool = False, ffn: str = 'gated',
                 gate_act: str = 'relu2', qkv_bias: bool = True, drop_path: Union[float, Sequence[float]] = 0.0,
                 use_checkpoint: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f'depth: must be positive, got {depth}')
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        if len(rates) != depth:
            raise ValueError(f'drop_path: expected one rate or {depth} (depth) rates, got {len(rates)}')
        self.blocks = nn.ModuleList(
            RITB(num_feat, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio, attn,
                 attn_norm, ffn, gate_act, qkv_bias, rates[i], use_checkpoint) for i in range(depth))
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor, h1: Optional[torch.Tensor] = None,
                h2: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the blocks and the conv, with the group residual.

        Args:
            x: (B, C, H, W) current features.
            h1: (B, C, H, W) branch output at t-1 warped to t; None means zeros (clip start).
            h2: (B, C, H, W) branch output at t-2 warped to t; None means zeros.

        Returns:
            (B, C, H, W) updated current features.
        """
        h1, h2 = _states_or_zeros(x, h1, h2)
        y, h1, h2 = (t.permute(0, 2, 3, 1) for t in (x, h1, h2))  # (B, H, W, C) each
        for block in self.blocks:
            y = block.forward_tokens(y, h1, h2)  # (B, H, W, C)
        return x + self.conv(y.permute(0, 3, 1, 2).contiguous())  # (B, C, H, W)
