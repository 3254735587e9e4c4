"""BasicVSR++ with boundary-state injection (the propagation protocol of :mod:`lrti_plugin.state`).

The second-order, four-branch propagation here (:meth:`LRTIBasicVSRPP._propagate` over a
:class:`~lrti_plugin.archs.propagation_util.BranchWalk`) is the skeleton the LRTI-VSR transformer reuses.
"""
from typing import Dict, List, Optional

import torch
from basicsr.archs.arch_util import flow_warp
from basicsr.archs.basicvsr_arch import ConvResidualBlocks
from basicsr.archs.basicvsrpp_arch import SecondOrderDeformableAlignment
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from lrti_plugin.archs.basicvsr_arch import build_spynet
from lrti_plugin.archs.propagation_util import (
    BranchWalk,
    autocast_device,
    branch_walk,
    check_lr_size,
    extend_clip,
    pair_flows,
    select,
)
from lrti_plugin.state import BoundaryStates, PropagationStates, check_boundary_states
from lrti_plugin.utils.validate import expect_bool, expect_int, expect_number, is_int

BRANCHES = ('backward_1', 'forward_1', 'backward_2', 'forward_2')
# BasicSR asserts this on the frames SpyNet sees (the LR input, or a same-size input downscaled x4).
FLOW_MIN_SIZE = 64


def _run_in_float32(module: nn.Module, *inputs: Tensor) -> Tensor:
    """``module(*inputs)``, in float32 when autocast is on for the inputs' device.

    Under mixed precision the deformable alignment (offset head and ``deform_conv2d``) runs in float32
    on every device: torchvision has no half/bfloat16 ``deform_conv2d`` on a CPU and casts it to float32
    on CUDA anyway, and offsets of up to ``max_residue_magnitude`` plus the flow need float32 resolution.
    """
    device_type = autocast_device(inputs[0])
    if not torch.is_autocast_enabled(device_type):
        return module(*inputs)
    with torch.autocast(device_type=device_type, enabled=False):
        return module(*(x.float() for x in inputs))


def _is_mirrored(lqs: Tensor) -> bool:
    """Whether frame i equals frame T-1-i for all i (BasicSR's mirror-extended test, as a pure function).

    Meta tensors (the memory estimator) have no values: never mirrored there, the costlier case."""
    if lqs.size(1) % 2 or lqs.is_meta:
        return False
    first, second = torch.chunk(lqs, 2, dim=1)
    return bool(torch.equal(first, second.flip(1)))


@ARCH_REGISTRY.register()
class LRTIBasicVSRPP(nn.Module):
    """BasicVSR++ (Chan et al., CVPR 2022) that accepts and returns boundary states.

    Same constructor arguments, layers and parameter names as BasicSR's ``BasicVSRPlusPlus`` built
    on a CUDA machine, so its checkpoints load with ``strict=True``. Unlike BasicSR's class, the
    second-order deformable alignment is built on every machine (BasicSR drops it without CUDA,
    which silently makes another network); it runs ``torchvision.ops.deform_conv2d`` with a mask
    (DCNv2) on CPU and GPU. Protocol branches: ``backward_1, forward_1, backward_2, forward_2``,
    second order (K = 2).

    Args:
        mid_channels (int): Channels of the intermediate features, a multiple of 8 (the alignment
            uses 16 deformable groups over 2 * mid_channels). Default: 64.
        num_blocks (int): Residual blocks of each propagation branch. Default: 7.
        max_residue_magnitude (float): Bound of the offset residue (Eq. 6 of the paper). Default: 10.
        is_low_res_input (bool): True: x4 upsampling of LR input; False: same-size output. Default: True.
        spynet_path (str | None): Pretrained SPyNet weights (a BasicSR ``params`` checkpoint). Default: None.
        cpu_cache_length (int): Clips longer than this keep their per-frame features on the CPU
            while the network runs on an accelerator (saves its memory, costs time). Default: 100.
    """

    branches = BRANCHES
    order = 2

    def __init__(self,
                 mid_channels: int = 64,
                 num_blocks: int = 7,
                 max_residue_magnitude: float = 10,
                 is_low_res_input: bool = True,
                 spynet_path: Optional[str] = None,
                 cpu_cache_length: int = 100):
        super().__init__()
        _check_args(mid_channels, num_blocks, max_residue_magnitude, is_low_res_input, cpu_cache_length)
        self.mid_channels = mid_channels
        self.is_low_res_input = is_low_res_input
        self.cpu_cache_length = cpu_cache_length
        self.spynet = build_spynet(spynet_path)
        if is_low_res_input:
            self.feat_extract = ConvResidualBlocks(3, mid_channels, 5)
        else:
            self.feat_extract = nn.Sequential(
                nn.Conv2d(3, mid_channels, 3, 2, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True),
                nn.Conv2d(mid_channels, mid_channels, 3, 2, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True),
                ConvResidualBlocks(mid_channels, mid_channels, 5))
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, name in enumerate(BRANCHES):
            self.deform_align[name] = SecondOrderDeformableAlignment(
                2 * mid_channels, mid_channels, 3, padding=1, deformable_groups=16,
                max_residue_magnitude=max_residue_magnitude)
            self.backbone[name] = ConvResidualBlocks((2 + i) * mid_channels, mid_channels, num_blocks)
        self.reconstruction = ConvResidualBlocks(5 * mid_channels, mid_channels, 5)
        self.upconv1 = nn.Conv2d(mid_channels, mid_channels * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(mid_channels, 64 * 4, 3, 1, 1, bias=True)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.img_upsample = nn.Upsample(scale_factor=4, mode='bilinear', align_corners=False)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, lqs: Tensor, init_states: Optional[BoundaryStates] = None, return_states: bool = False,
                states_only: bool = False):
        """Super-resolve a clip.

        Args:
            lqs (Tensor): (B, T, 3, H, W); H, W >= 64 (>= 256 when ``is_low_res_input`` is False).
            init_states (BoundaryStates | None): borders of the clip (``states.window(s, T)``); None
                starts every branch from zeros, as BasicSR's BasicVSRPlusPlus does.
            return_states (bool): also return the :class:`PropagationStates` of this pass.
            states_only (bool): return only the :class:`PropagationStates`, skipping the reconstruction
                (what LRTI's long pass needs). Default: False.

        Returns:
            Tensor: (B, T, 3, sH, sW), s = 4 (or 1 when ``is_low_res_input`` is False); with
            ``return_states``, a tuple (output, PropagationStates); with ``states_only``, the
            PropagationStates.
        """
        scale = 1 if self.is_low_res_input else 4
        check_lr_size(lqs, FLOW_MIN_SIZE * scale, f'BasicVSR++ computes flows at 1/{scale} of the input, '
                      f'which must be at least {FLOW_MIN_SIZE} pixels')
        b, t, c, h, w = lqs.shape
        cache = lqs.device.type != 'cpu' and t > self.cpu_cache_length
        spatial = self.feat_extract(lqs.reshape(-1, c, h, w))  # (B*T, C, h, w)
        spatial = spatial.view(b, t, *spatial.shape[1:])  # (B, T, C, h, w)
        if init_states is not None:
            check_boundary_states(init_states, list(BRANCHES), self.order, lqs, tuple(spatial.shape[2:]))
        spatial = [_store(spatial[:, i], cache) for i in range(t)]
        flows_forward, flows_backward, kb, ka = self._compute_flows(lqs, init_states)
        feats: Dict[str, List[Tensor]] = {}
        for name in BRANCHES:
            walk = branch_walk(name, t, init_states, kb, ka, flows_forward, flows_backward)
            feats[name] = self._propagate(spatial, feats, walk, name, cache, lqs.device)
        if states_only:
            return PropagationStates.from_frames(feats, lqs, self.order, init_states)
        out = torch.stack([_store(self._upsample(lqs[:, i], spatial[i], [v[i] for v in feats.values()]), cache)
                           for i in range(t)], dim=1)  # (B, T, 3, sH, sW)
        if not return_states:
            return out
        return out, PropagationStates.from_frames(feats, lqs, self.order, init_states)

    def _compute_flows(self, lqs: Tensor, init: Optional[BoundaryStates]):
        """Flows over the clip extended by its outside frames (see ``extend_clip``/``branch_walk``).

        Returns:
            tuple: flows_forward (B, kb+T-1, 2, h, w), flows_backward (B, T+ka-1, 2, h, w), kb, ka.
        """
        lqs_ext, kb, ka = extend_clip(lqs, init)  # (B, E, 3, H, W)
        if not self.is_low_res_input:
            b, e, c, h, w = lqs_ext.shape
            lqs_ext = F.interpolate(lqs_ext.view(-1, c, h, w), scale_factor=0.25, mode='bicubic')
            lqs_ext = lqs_ext.view(b, e, c, h // 4, w // 4)  # (B, E, 3, H/4, W/4)
        t = lqs.size(1)
        flows_backward = pair_flows(self.spynet, lqs_ext[:, kb:], backward=True)
        if init is None and _is_mirrored(lqs):  # BasicSR's shortcut: the forward flows are the same pairs
            return flows_backward.flip(1), flows_backward, kb, ka
        flows_forward = pair_flows(self.spynet, lqs_ext[:, :kb + t], backward=False)
        return flows_forward, flows_backward, kb, ka

    def _propagate(self, spatial: List[Tensor], feats: Dict[str, List[Tensor]], walk: BranchWalk, name: str,
                   cache: bool, device: torch.device) -> List[Tensor]:
        """Run branch ``name``; returns its T outputs (B, C, h, w) in time order.

        Args:
            spatial (list[Tensor]): T features (B, C, h, w) of the frames.
            feats (dict): outputs of the branches already run, each a list of T (B, C, h, w).
            walk (BranchWalk): the branch's frames, history and flows in processing order.
            cache (bool): keep outputs on the CPU.
            device (torch.device): where the network runs.
        """
        outs: Dict[int, Tensor] = dict(enumerate(walk.history))  # position -> (B, C, h, w)
        result: List[Tensor] = [None] * len(walk.frames)
        for p, i in enumerate(walk.frames, start=len(walk.history)):
            feat_current = spatial[i].to(device)
            feat_prop = self._align(name, walk, outs, p, feat_current)
            others = [feats[k][i].to(device) for k in feats]
            feat = torch.cat([feat_current, *others, feat_prop], dim=1)  # (B, (2+j)*C, h, w)
            feat_prop = feat_prop + self.backbone[name](feat)
            outs[p] = feat_prop
            outs.pop(p - self.order, None)  # only the last K outputs are looked at
            result[i] = _store(feat_prop, cache)
        return result

    def _align(self, name: str, walk: BranchWalk, outs: Dict[int, Tensor], p: int, feat_current: Tensor) -> Tensor:
        """Second-order flow-guided deformable alignment of the outputs at p-1, p-2 onto p: (B, C, h, w).

        A sample whose position p-1 (p-2) does not exist gets what BasicSR's loop gives its first
        (second) frame: zeros (zero second-order terms).
        """
        b = feat_current.size(0)
        real_1, real_2 = walk.real(p - 1, b), walk.real(p - 2, b)
        zeros = torch.zeros_like(feat_current)
        if not any(real_1):
            return zeros
        feat_n1, flow_n1 = outs[p - 1], walk.flows[p]  # (B, C, h, w), (B, 2, h, w)
        cond_n1 = flow_warp(feat_n1, flow_n1.permute(0, 2, 3, 1))
        feat_n2, flow_n2, cond_n2 = zeros, torch.zeros_like(flow_n1), zeros
        if any(real_2):
            flow_2 = flow_n1 + flow_warp(walk.flows[p - 1], flow_n1.permute(0, 2, 3, 1))  # p-2 onto p
            feat_n2 = select(real_2, outs[p - 2], zeros)
            flow_n2 = select(real_2, flow_2, flow_n2)
            cond_n2 = select(real_2, flow_warp(outs[p - 2], flow_2.permute(0, 2, 3, 1)), zeros)
        cond = torch.cat([cond_n1, feat_current, cond_n2], dim=1)  # (B, 3C, h, w)
        aligned = _run_in_float32(self.deform_align[name], torch.cat([feat_n1, feat_n2], dim=1), cond, flow_n1, flow_n2)
        return select(real_1, aligned.to(feat_current.dtype), zeros)

    def _upsample(self, lq: Tensor, spatial: Tensor, branch_feats: List[Tensor]) -> Tensor:
        """(B, 3, H, W) frame, its spatial and branch features (B, C, h, w) -> (B, 3, sH, sW)."""
        device = lq.device
        hr = torch.cat([spatial.to(device), *[f.to(device) for f in branch_feats]], dim=1)  # (B, 5C, h, w)
        hr = self.reconstruction(hr)
        hr = self.lrelu(self.pixel_shuffle(self.upconv1(hr)))  # (B, C, 2h, 2w)
        hr = self.lrelu(self.pixel_shuffle(self.upconv2(hr)))  # (B, 64, 4h, 4w)
        hr = self.lrelu(self.conv_hr(hr))
        hr = self.conv_last(hr)
        return hr + (self.img_upsample(lq) if self.is_low_res_input else lq)


def _store(x: Tensor, cache: bool) -> Tensor:
    """Keep ``x`` on the CPU when caching (BasicSR's ``cpu_cache``), else where it is."""
    return x.to('cpu') if cache else x


def _check_args(mid_channels, num_blocks, max_residue_magnitude, is_low_res_input, cpu_cache_length) -> None:
    """ValueError naming the first bad constructor argument."""
    if not is_int(mid_channels) or mid_channels < 8 or mid_channels % 8:
        raise ValueError(f'mid_channels: expected a positive multiple of 8, got {mid_channels!r}')
    expect_int('num_blocks', num_blocks, minimum=0)
    expect_number('max_residue_magnitude', max_residue_magnitude, 0, low_open=True)
    expect_bool('is_low_res_input', is_low_res_input)
    expect_int('cpu_cache_length', cpu_cache_length, minimum=0)
