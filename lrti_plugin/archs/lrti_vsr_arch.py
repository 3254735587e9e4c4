"""LRTI-VSR: a second-order, four-branch, flow-guided recurrent transformer built from RITBs.

The grid is BasicVSR++'s (branches ``backward_1, forward_1, backward_2, forward_2``, each looking at
its own outputs at t-1 and t-2, each fed the outputs of the branches before it), with the
deformable alignment and residual conv trunk replaced by flow warping and :class:`RITBGroup` s
(method.md, sections 3-4). It speaks the propagation protocol of :mod:`lrti_plugin.state`.

Glossary: B batch, T frames, C = ``num_feat`` channels, H, W LR size, sH, sW = 4H, 4W.
"""
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.archs.arch_util import flow_warp
from basicsr.archs.basicvsr_arch import ConvResidualBlocks
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from lrti_plugin.archs.basicvsr_arch import SPYNET_MIN_SIZE, build_spynet
from lrti_plugin.archs.propagation_util import BranchWalk, branch_walk, check_lr_size, extend_clip, pair_flows, select
from lrti_plugin.archs.ritb_arch import RITBGroup
from lrti_plugin.state import BoundaryStates, PropagationStates, check_boundary_states
from lrti_plugin.utils.validate import expect_bool, expect_int, expect_number, is_number

BRANCHES = ('backward_1', 'forward_1', 'backward_2', 'forward_2')


@ARCH_REGISTRY.register()
class LRTIVSR(nn.Module):
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
                 drop_path_rate: float = 0.1):
        super().__init__()
        _check_args(num_feat=num_feat, num_heads=num_heads, window_size=window_size, num_groups=num_groups,
                    depth=depth, mlp_ratio=mlp_ratio, attn_norm=attn_norm, qkv_bias=qkv_bias,
                    mid_channels=mid_channels, num_extract_block=num_extract_block, use_checkpoint=use_checkpoint,
                    drop_path_rate=drop_path_rate)
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

    def forward(self, lqs: Tensor, init_states: Optional[BoundaryStates] = None, return_states: bool = False,
                states_only: bool = False):
        """Super-resolve a clip.

        Args:
            lqs (Tensor): (B, T, 3, H, W) LR frames, H, W >= 33 (SpyNet); any H, W for the windows.
            init_states (BoundaryStates | None): borders of the clip (``states.window(s, T)``); None
                starts every branch from zeros, like a plain recurrent model.
            return_states (bool): also return the :class:`PropagationStates` of this pass (every
                branch's (B, T, C, H, W) outputs).
            states_only (bool): return only the :class:`PropagationStates`, skipping the reconstruction
                (what LRTI's long pass needs). Default: False.

        Returns:
            Tensor: (B, T, 3, sH, sW) with sH, sW = 4H, 4W; with ``return_states``, a tuple
            (output, PropagationStates); with ``states_only``, the PropagationStates.
        """
        check_lr_size(lqs, SPYNET_MIN_SIZE, f'SpyNet needs at least {SPYNET_MIN_SIZE} pixels')
        b, t, c, h, w = lqs.shape
        if init_states is not None:
            check_boundary_states(init_states, list(BRANCHES), self.order, lqs, (self.num_feat, h, w))
        spatial = self.feat_extract(lqs.reshape(-1, c, h, w))  # (B*T, C, H, W)
        spatial = spatial.view(b, t, self.num_feat, h, w).unbind(1)  # T x (B, C, H, W)
        lqs_ext, kb, ka = extend_clip(lqs, init_states)  # (B, kb+T+ka, 3, H, W)
        flows_backward = pair_flows(self.spynet, lqs_ext[:, kb:], backward=True)  # (B, T+ka-1, 2, H, W)
        flows_forward = pair_flows(self.spynet, lqs_ext[:, :kb + t], backward=False)  # (B, kb+T-1, 2, H, W)
        feats: Dict[str, List[Tensor]] = {}
        for name in BRANCHES:
            walk = branch_walk(name, t, init_states, kb, ka, flows_forward, flows_backward)
            feats[name] = self._propagate(spatial, feats, walk, name)
        if states_only:
            return PropagationStates.from_frames(feats, lqs, self.order, init_states)
        last = feats[BRANCHES[-1]]
        out = torch.stack([self._upsample(lqs[:, i], last[i]) for i in range(t)], dim=1)  # (B, T, 3, sH, sW)
        if not return_states:
            return out
        return out, PropagationStates.from_frames(feats, lqs, self.order, init_states)

    def _propagate(self, spatial: Tuple[Tensor, ...], feats: Dict[str, List[Tensor]], walk: BranchWalk,
                   name: str) -> List[Tensor]:
        """Run branch ``name``; returns its T outputs (B, C, H, W) in time order.

        Args:
            spatial (tuple[Tensor]): T shallow features (B, C, H, W) of the frames.
            feats (dict): outputs of the branches already run, each a list of T (B, C, H, W).
            walk (BranchWalk): the branch's frames, history and flows in processing order.
            name (str): the branch.
        """
        outs: Dict[int, Tensor] = dict(enumerate(walk.history))  # position -> (B, C, H, W)
        result: List[Tensor] = [None] * len(walk.frames)
        for p, i in enumerate(walk.frames, start=len(walk.history)):
            x = torch.cat([spatial[i], *(v[i] for v in feats.values())], dim=1)  # (B, (1+j)*C, H, W)
            x = self.fusion[name](x)  # (B, C, H, W)
            h1, h2 = _warped_history(walk, outs, p, x)
            for group in self.body[name]:
                x = group(x, h1, h2)  # (B, C, H, W)
            outs[p] = x
            outs.pop(p - self.order, None)  # only the last K outputs are looked at
            result[i] = x
        return result

    def _upsample(self, lq: Tensor, feat: Tensor) -> Tensor:
        """(B, 3, H, W) frame and its last-branch features (B, C, H, W) -> (B, 3, sH, sW)."""
        out = self.lrelu(self.conv_before_upsample(feat))  # (B, mid, H, W)
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))  # (B, mid, 2H, 2W)
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))  # (B, mid, 4H, 4W)
        out = self.conv_last(self.lrelu(self.conv_hr(out)))  # (B, 3, 4H, 4W)
        return out + F.interpolate(lq, scale_factor=4, mode='bilinear', align_corners=False)


def _warped_history(walk: BranchWalk, outs: Dict[int, Tensor], p: int, x: Tensor) -> Tuple[Tensor, Tensor]:
    """The branch's outputs at positions p-1 and p-2 warped onto p: two (B, C, H, W).

    A sample whose position p-1 (p-2) does not exist gets zeros there, as at a plain clip's start.
    The p-2 flow is BasicVSR++'s composition ``f1 + warp(f2, f1)`` (f1: p-1 onto p; f2: p-2 onto p-1).
    """
    b = x.size(0)
    zeros = torch.zeros_like(x)
    real_1, real_2 = walk.real(p - 1, b), walk.real(p - 2, b)
    if not any(real_1):
        return zeros, zeros
    flow_1 = walk.flows[p]  # (B, 2, H, W)
    h1 = select(real_1, flow_warp(outs[p - 1], flow_1.permute(0, 2, 3, 1)), zeros)
    if not any(real_2):
        return h1, zeros
    flow_2 = flow_1 + flow_warp(walk.flows[p - 1], flow_1.permute(0, 2, 3, 1))  # (B, 2, H, W)
    h2 = select(real_2, flow_warp(outs[p - 2], flow_2.permute(0, 2, 3, 1)), zeros)
    return h1, h2


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
