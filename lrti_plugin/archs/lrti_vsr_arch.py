"""LRTI-VSR: a second-order, four-branch, flow-guided recurrent transformer built from RITBs.

The grid is BasicVSR++'s (branches ``backward_1, forward_1, backward_2, forward_2``, each looking at
its own outputs at t-1 and t-2, each fed the outputs of the branches before it), with the
deformable alignment and residual conv trunk replaced by flow warping and :class:`RITBGroup` s
(method.md, sections 3-4). It speaks the propagation protocol of :mod:`lrti_plugin.state` through the
engine (:class:`~lrti_plugin.archs.propagation.RecurrentVSR`), which owns the recurrence.

Glossary: B batch, T frames, C = ``num_feat`` channels, H, W LR size, sH, sW = 4H, 4W.
"""
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.archs.basicvsr_arch import ConvResidualBlocks
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from lrti_plugin.archs.basicvsr_arch import SPYNET_MIN_SIZE, build_spynet
from lrti_plugin.archs.propagation import History, RecurrentVSR
from lrti_plugin.archs.propagation_util import check_lr_size
from lrti_plugin.archs.ritb_arch import RITBGroup
from lrti_plugin.utils.validate import expect_bool, expect_int, expect_number, is_number

BRANCHES = ('backward_1', 'forward_1', 'backward_2', 'forward_2')


@ARCH_REGISTRY.register()
class LRTIVSR(RecurrentVSR):
    """LRTI-VSR, x4: recurrent transformer VSR that accepts and returns boundary states.

    Per frame t of branch j (in its processing order): ``x = fusion_j(cat(F_t, O^0_t .. O^{j-1}_t))``
    (``F_t`` the shallow features, ``O^i_t`` the outputs of the earlier branches at t; a 1x1 conv
    for j > 0, identity for j = 0), ``h1``/``h2`` = the branch's own outputs at t-1/t-2 warped to t
    (the t-2 flow composed as in BasicVSR++: ``f1 + warp(f2, f1)``; zeros where the frame does not
    exist), then ``O^j_t = G_n(...G_1(x; h1, h2); h1, h2)`` with ``num_groups`` RITBGroups.
    The SR frame is reconstructed from the last branch only, as in MIA-VSR: it has seen every
    branch through the concatenations, and a fusion of all four would cost another (4C -> C) conv
    for no shown gain. Reconstruction: conv C -> mid, two (conv, pixel shuffle x2) stages, two convs,
    plus a bilinear x4 skip of the LR frame.

    Protocol branches: ``backward_1, forward_1, backward_2, forward_2``, second order (K = 2).

    Configs (YAML ``network_g`` keys)::

        paper = dict(num_feat=120, num_heads=6, window_size=8, num_groups=4, depth=6, mlp_ratio=4 / 3,
                     mid_channels=64, num_extract_block=2)        # the defaults: 16.2 M parameters
        tiny = dict(num_feat=16, num_heads=2, window_size=4, num_groups=1, depth=2, mlp_ratio=2,
                    mid_channels=16, num_extract_block=1)       # trains on a CPU: 1.51 M (1.44 M SpyNet)

    ``mlp_ratio=4/3`` gives the gated FFN (three C x hidden matrices) the parameters of MIA-VSR's
    ratio-2 MLP (two), so the paper-scale net (16.2 M) stays near MIA-VSR's ~16.5 M; ``mlp_ratio=2`` (hidden 2C,
    method.md) adds 2.8 M. Use ``mlp_ratio=2`` with ``ffn: mlp`` for a parameter-matched ablation.

    Args:
        num_feat (int): Channels C of the features and of every branch. Default: 120.
        num_heads (int): Attention heads; must divide ``num_feat``. Default: 6.
        window_size (int): Window side of the RITB attention (any H, W: frames are padded). Default: 8.
        num_groups (int): RITBGroups per branch. Default: 4.
        depth (int): RITBs per group (shift 0, ws//2, 0, ...). Default: 6.
        mlp_ratio (float): FFN hidden width = round(mlp_ratio * num_feat). Default: 4/3.
        attn (str): ``relu2`` (refocused, ``relu(s)**2``) | ``softmax``. Default: ``relu2``.
        attn_norm (bool): relu2 only: divide each attention row by its sum plus eps. Default: False.
        ffn (str): ``gated`` (hidden units gated by the warped t-1 output) | ``mlp``. Default: ``gated``.
        gate_act (str): Gate activation of ``ffn: gated``: ``relu2`` | ``sigmoid``. Default: ``relu2``.
        qkv_bias (bool): Biases in the attention's q and kv projections. Default: True.
        mid_channels (int): Channels of the reconstruction (upsampling) layers. Default: 64.
        num_extract_block (int): Residual blocks of the shallow feature extraction (after one conv).
            Default: 2.
        spynet_path (str | None): Pretrained SPyNet weights (a BasicSR ``params`` checkpoint); a
            missing file raises FileNotFoundError. Default: None.
        use_checkpoint (bool): Gradient checkpointing of every RITB (saves activation memory, costs
            one more forward). Default: False.
        drop_path_rate (float): Stochastic depth, increasing linearly from 0 at the first block of a
            branch to this rate at its last (the same in every branch); training mode only. Default: 0.1.
        state_max_rms (float | None): Bound on the root-mean-square of every branch output (the recurrent
            state), per sample; None: no bound (:class:`~lrti_plugin.archs.propagation.RecurrentVSR`). Default: None.
    """

    branches = BRANCHES
    order = 2

    def __init__(self,
                 num_feat: int = 120,
                 num_heads: int = 6,
                 window_size: int = 8,
                 num_groups: int = 4,
                 depth: int = 6,
                 mlp_ratio: float = 4 / 3,
                 attn: str = 'relu2',
                 attn_norm: bool = False,
                 ffn: str = 'gated',
                 gate_act: str = 'relu2',
                 qkv_bias: bool = True,
                 mid_channels: int = 64,
                 num_extract_block: int = 2,
                 spynet_path: Optional[str] = None,
                 use_checkpoint: bool = False,
                 drop_path_rate: float = 0.1,
                 state_max_rms: Optional[float] = None):
        super().__init__()
        _check_args(num_feat=num_feat, num_heads=num_heads, window_size=window_size, num_groups=num_groups,
                    depth=depth, mlp_ratio=mlp_ratio, attn_norm=attn_norm, qkv_bias=qkv_bias,
                    mid_channels=mid_channels, num_extract_block=num_extract_block, use_checkpoint=use_checkpoint,
                    drop_path_rate=drop_path_rate)
        self.bound_states(state_max_rms)
        self.num_feat = num_feat
        self.spynet = build_spynet(spynet_path)
        self.feat_extract = ConvResidualBlocks(3, num_feat, num_extract_block)
        rates = _linear_rates(drop_path_rate, num_groups * depth)
        self.fusion = nn.ModuleDict()
        self.body = nn.ModuleDict()
        for j, name in enumerate(BRANCHES):
            self.fusion[name] = nn.Conv2d((1 + j) * num_feat, num_feat, 1) if j else nn.Identity()
            self.body[name] = nn.ModuleList(
                RITBGroup(num_feat, depth, num_heads, window_size, mlp_ratio, attn, attn_norm, ffn, gate_act, qkv_bias,
                          rates[g * depth:(g + 1) * depth], use_checkpoint) for g in range(num_groups))
        self.conv_before_upsample = nn.Conv2d(num_feat, mid_channels, 3, 1, 1)
        self.upconv1 = nn.Conv2d(mid_channels, mid_channels * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(mid_channels, mid_channels * 4, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(mid_channels, mid_channels, 3, 1, 1)
        self.conv_last = nn.Conv2d(mid_channels, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    min_input_size = SPYNET_MIN_SIZE

    def check_input(self, lqs: Tensor) -> None:
        check_lr_size(lqs, SPYNET_MIN_SIZE, f'SpyNet needs at least {SPYNET_MIN_SIZE} pixels')

    def encode(self, lqs: Tensor) -> List[Tensor]:
        """The shallow features of every frame: T x (B, C, H, W)."""
        b, t, c, h, w = lqs.shape
        spatial = self.feat_extract(lqs.reshape(-1, c, h, w))  # (B*T, C, H, W)
        return list(spatial.view(b, t, self.num_feat, h, w).unbind(1))

    def state_shape(self, lqs: Tensor) -> Tuple[int, int, int]:
        return self.num_feat, lqs.size(3), lqs.size(4)

    def step(self, name: str, frame: Tensor, others: List[Tensor], history: History) -> Tensor:
        """Fuse the frame with the earlier branches, warp the branch's outputs 1 and 2 steps back onto it
        (zeros where missing), then the RITB groups."""
        x = self.fusion[name](torch.cat([frame, *others], dim=1))  # (B, C, H, W)
        zeros = torch.zeros_like(x)
        h1 = history.warped(1, zeros)
        h2 = history.warped(2, zeros) if history.any(1) else zeros
        for group in self.body[name]:
            x = group(x, h1, h2)  # (B, C, H, W)
        return x

    def reconstruct(self, lq: Tensor, frame: Tensor, feats: Dict[str, Tensor]) -> Tensor:
        return self._upsample(lq, feats[BRANCHES[-1]])

    def _upsample(self, lq: Tensor, feat: Tensor) -> Tensor:
        """(B, 3, H, W) frame and its last-branch features (B, C, H, W) -> (B, 3, sH, sW)."""
        out = self.lrelu(self.conv_before_upsample(feat))  # (B, mid, H, W)
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))  # (B, mid, 2H, 2W)
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))  # (B, mid, 4H, 4W)
        out = self.conv_last(self.lrelu(self.conv_hr(out)))  # (B, 3, 4H, 4W)
        return out + F.interpolate(lq, scale_factor=4, mode='bilinear', align_corners=False)


def _linear_rates(rate: float, n: int) -> List[float]:
    """n stochastic-depth rates from 0 to ``rate`` (timm/SwinIR's linear rule)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def _check_args(**args) -> None:
    """ValueError naming the first bad constructor argument (the string enums are checked by RITB)."""
    for key in ('num_feat', 'num_heads', 'window_size', 'num_groups', 'depth', 'mid_channels'):
        expect_int(key, args[key], minimum=1)
    if args['num_feat'] % args['num_heads']:
        raise ValueError(f'num_heads: must divide num_feat={args["num_feat"]}, got {args["num_heads"]}')
    expect_int('num_extract_block', args['num_extract_block'], minimum=0)
    ratio = args['mlp_ratio']
    if not is_number(ratio) or round(ratio * args['num_feat']) < 1:
        raise ValueError(f'mlp_ratio: expected a number giving a positive hidden width, got {ratio!r}')
    for key in ('attn_norm', 'qkv_bias', 'use_checkpoint'):
        expect_bool(key, args[key])
    expect_number('drop_path_rate', args['drop_path_rate'], 0, 1)
