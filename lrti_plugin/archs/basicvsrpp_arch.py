"""BasicVSR++ with boundary-state injection (the propagation protocol of :mod:`lrti_plugin.state`).

The recurrence is the engine's (:class:`~lrti_plugin.archs.propagation.RecurrentVSR`); this module supplies
BasicVSR++'s encoder, its step (second-order deformable alignment, residual backbone) and its reconstruction.
"""
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.archs.arch_util import flow_warp
from basicsr.archs.basicvsr_arch import ConvResidualBlocks
from basicsr.archs.basicvsrpp_arch import SecondOrderDeformableAlignment
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from lrti_plugin.archs.basicvsr_arch import build_spynet
from lrti_plugin.archs.propagation import History, RecurrentVSR, store
from lrti_plugin.archs.propagation_util import check_lr_size, run_in_float32, select
from lrti_plugin.utils.validate import expect_bool, expect_int, expect_number, is_int

BRANCHES = ('backward_1', 'forward_1', 'backward_2', 'forward_2')
# BasicSR asserts this on the frames SpyNet sees (the LR input, or a same-size input downscaled x4).
FLOW_MIN_SIZE = 64


@ARCH_REGISTRY.register()
class LRTIBasicVSRPP(RecurrentVSR):
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
        state_max_rms (float | None): Bound on the root-mean-square of every branch output (the recurrent
            state), per sample; None: no bound (:class:`~lrti_plugin.archs.propagation.RecurrentVSR`). Default: None.
    """

    branches = BRANCHES
    order = 2
    reuse_mirrored_flows = True  # BasicSR's shortcut for mirror-extended clips (the same flow values)

    def __init__(self,
                 mid_channels: int = 64,
                 num_blocks: int = 7,
                 max_residue_magnitude: float = 10,
                 is_low_res_input: bool = True,
                 spynet_path: Optional[str] = None,
                 cpu_cache_length: int = 100,
                 state_max_rms: Optional[float] = None):
        super().__init__()
        _check_args(mid_channels, num_blocks, max_residue_magnitude, is_low_res_input, cpu_cache_length)
        self.bound_states(state_max_rms)
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

    @property
    def min_input_size(self) -> int:
        return FLOW_MIN_SIZE * (1 if self.is_low_res_input else 4)

    def check_input(self, lqs: Tensor) -> None:
        scale = 1 if self.is_low_res_input else 4
        check_lr_size(lqs, FLOW_MIN_SIZE * scale, f'BasicVSR++ computes flows at 1/{scale} of the input, '
                      f'which must be at least {FLOW_MIN_SIZE} pixels')

    def encode(self, lqs: Tensor) -> List[Tensor]:
        """The spatial features of every frame (kept on the CPU for long clips on an accelerator)."""
        b, t, c, h, w = lqs.shape
        spatial = self.feat_extract(lqs.reshape(-1, c, h, w))  # (B*T, C, h, w)
        spatial = spatial.view(b, t, *spatial.shape[1:])  # (B, T, C, h, w)
        host = self.keep_on_host(lqs)
        return [store(spatial[:, i], host) for i in range(t)]

    def state_shape(self, lqs: Tensor) -> Tuple[int, int, int]:
        h, w = lqs.shape[3:]
        return (self.mid_channels, h, w) if self.is_low_res_input else (self.mid_channels, h // 4, w // 4)

    def flow_input(self, lqs: Tensor) -> Tensor:
        """The LR clip, or the same-size input downscaled x4 (``is_low_res_input: false``)."""
        if self.is_low_res_input:
            return lqs
        b, e, c, h, w = lqs.shape
        small = F.interpolate(lqs.view(-1, c, h, w), scale_factor=0.25, mode='bicubic')
        return small.view(b, e, c, h // 4, w // 4)  # (B, E, 3, H/4, W/4)

    def keep_on_host(self, lqs: Tensor) -> bool:
        return lqs.device.type != 'cpu' and lqs.size(1) > self.cpu_cache_length

    def step(self, name: str, frame: Tensor, others: List[Tensor], history: History) -> Tensor:
        """Second-order deformable alignment of the branch's past, then its residual backbone."""
        feat_prop = self._align(name, history, frame)
        feat = torch.cat([frame, *others, feat_prop], dim=1)  # (B, (2+j)*C, h, w)
        return feat_prop + self.backbone[name](feat)

    def reconstruct(self, lq: Tensor, frame: Tensor, feats: Dict[str, Tensor]) -> Tensor:
        return self._upsample(lq, frame, list(feats.values()))

    def _align(self, name: str, history: History, feat_current: Tensor) -> Tensor:
        """Second-order flow-guided deformable alignment of the outputs 1 and 2 steps back: (B, C, h, w).

        Under mixed precision the alignment (offset head and ``deform_conv2d``) runs in float32 on every
        device: torchvision has no half/bfloat16 ``deform_conv2d`` on a CPU and casts it to float32 on CUDA
        anyway, and offsets of up to ``max_residue_magnitude`` plus the flow need float32 resolution.

        A sample without the output 1 (2) step(s) back gets what BasicSR's loop gives its first
        (second) frame: zeros (zero second-order terms).
        """
        zeros = torch.zeros_like(feat_current)
        if not history.any(1):
            return zeros
        feat_n1, flow_n1 = history.feat(1), history.flow(1)  # (B, C, h, w), (B, 2, h, w)
        cond_n1 = flow_warp(feat_n1, flow_n1.permute(0, 2, 3, 1))
        feat_n2, flow_n2, cond_n2 = zeros, torch.zeros_like(flow_n1), zeros
        if history.any(2):
            real_2, flow_2 = history.real(2), history.flow(2)  # flow_2: 2 steps back onto this frame
            feat_n2 = select(real_2, history.feat(2), zeros)
            flow_n2 = select(real_2, flow_2, flow_n2)
            cond_n2 = select(real_2, flow_warp(history.feat(2), flow_2.permute(0, 2, 3, 1)), zeros)
        cond = torch.cat([cond_n1, feat_current, cond_n2], dim=1)  # (B, 3C, h, w)
        aligned = run_in_float32(self.deform_align[name], torch.cat([feat_n1, feat_n2], dim=1), cond, flow_n1, flow_n2)
        return select(history.real(1), aligned.to(feat_current.dtype), zeros)

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


def _check_args(mid_channels, num_blocks, max_residue_magnitude, is_low_res_input, cpu_cache_length) -> None:
    """ValueError naming the first bad constructor argument."""
    if not is_int(mid_channels) or mid_channels < 8 or mid_channels % 8:
        raise ValueError(f'mid_channels: expected a positive multiple of 8, got {mid_channels!r}')
    expect_int('num_blocks', num_blocks, minimum=0)
    expect_number('max_residue_magnitude', max_residue_magnitude, 0, low_open=True)
    expect_bool('is_low_res_input', is_low_res_input)
    expect_int('cpu_cache_length', cpu_cache_length, minimum=0)
