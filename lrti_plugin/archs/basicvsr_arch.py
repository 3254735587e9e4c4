"""BasicVSR with boundary-state injection (the propagation protocol of :mod:`lrti_plugin.state`)."""
import os
from typing import Dict, List, Optional

import torch
from basicsr.archs.arch_util import flow_warp
from basicsr.archs.basicvsr_arch import ConvResidualBlocks
from basicsr.archs.spynet_arch import SpyNet
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from lrti_plugin.archs.propagation_util import BranchWalk, branch_walk, check_lr_size, extend_clip, pair_flows, select
from lrti_plugin.state import BoundaryStates, PropagationStates, check_boundary_states
from lrti_plugin.utils.checkpoint import check_state_dict, read_checkpoint, select_params
from lrti_plugin.utils.validate import expect_int

# SpyNet pads H, W up to a multiple of 32 and pools 5 times; at H or W <= 32 its coarsest flow is empty.
SPYNET_MIN_SIZE = 33


def build_spynet(spynet_path: Optional[str]) -> SpyNet:
    """BasicSR's SpyNet, with a readable error for a missing weights file (key ``spynet_path``)."""
    if spynet_path is not None and not isinstance(spynet_path, str):
        raise ValueError(f'spynet_path: expected a path or None, got {spynet_path!r}')
    if spynet_path and not os.path.isfile(spynet_path):
        raise FileNotFoundError(f'spynet_path: no SpyNet weights file at {spynet_path!r} (scripts/get_weights.py '
                                'writes it to experiments/pretrained_models/flownet/)')
    spynet = SpyNet(None)
    if spynet_path:
        state = dict(select_params(read_checkpoint(spynet_path, 'spynet_path'), spynet_path, 'params'))
        for name in ('mean', 'std'):  # BasicSR's SpyNet files hold the layers only: these buffers are constants
            state.setdefault(name, getattr(spynet, name))
        check_state_dict(spynet, state, spynet_path)
        spynet.load_state_dict(state)
    return spynet


@ARCH_REGISTRY.register()
class LRTIBasicVSR(nn.Module):
    """BasicVSR (Chan et al., CVPR 2021), x4, that accepts and returns boundary states.

    Same layers and parameter names as BasicSR's ``BasicVSR``: its checkpoints load with
    ``strict=True`` and, without ``init_states``, the outputs are the same. Branches of the
    protocol: ``'backward'`` and ``'forward'``, first order (K = 1).

    Args:
        num_feat (int): Number of channels. Default: 64.
        num_block (int): Number of residual blocks of each propagation trunk. Default: 15.
        spynet_path (str | None): Pretrained SPyNet weights (a BasicSR ``params`` checkpoint). Default: None.
    """

    branches = ('backward', 'forward')
    order = 1

    def __init__(self, num_feat: int = 64, num_block: int = 15, spynet_path: Optional[str] = None):
        super().__init__()
        expect_int('num_feat', num_feat, minimum=1)
        expect_int('num_block', num_block, minimum=0)
        self.num_feat = num_feat
        self.spynet = build_spynet(spynet_path)
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0, bias=True)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1, bias=True)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, lqs: Tensor, init_states: Optional[BoundaryStates] = None, return_states: bool = False,
                states_only: bool = False):
        """Super-resolve a clip.

        Args:
            lqs (Tensor): (B, T, 3, H, W) LR frames, H, W >= 33.
            init_states (BoundaryStates | None): borders of the clip (``states.window(s, T)``); None
                starts both branches from zeros, as BasicSR's BasicVSR does.
            return_states (bool): also return the :class:`PropagationStates` of this pass.
            states_only (bool): return only the :class:`PropagationStates`, skipping the reconstruction
                (what LRTI's long pass needs). Default: False.

        Returns:
            Tensor: (B, T, 3, 4H, 4W); with ``return_states``, a tuple (output, PropagationStates); with
            ``states_only``, the PropagationStates.
        """
        check_lr_size(lqs, SPYNET_MIN_SIZE, 'SpyNet needs at least 33 pixels')
        b, t, _, h, w = lqs.shape
        if init_states is not None:
            check_boundary_states(init_states, list(self.branches), self.order, lqs, (self.num_feat, h, w))
        lqs_ext, kb, ka = extend_clip(lqs, init_states)
        flows_backward = pair_flows(self.spynet, lqs_ext[:, kb:], backward=True)  # (B, T+ka-1, 2, H, W)
        flows_forward = pair_flows(self.spynet, lqs_ext[:, :kb + t], backward=False)  # (B, kb+T-1, 2, H, W)
        feats = {}
        for name, trunk in (('backward', self.backward_trunk), ('forward', self.forward_trunk)):
            walk = branch_walk(name, t, init_states, kb, ka, flows_forward, flows_backward)
            feats[name] = self._propagate(lqs, walk, trunk)
        if states_only:
            return PropagationStates.from_frames(feats, lqs, self.order, init_states)
        out = torch.stack([self._upsample(lqs[:, i], feats['backward'][i], feats['forward'][i]) for i in range(t)],
                          dim=1)  # (B, T, 3, 4H, 4W)
        if not return_states:
            return out
        return out, PropagationStates.from_frames(feats, lqs, self.order, init_states)

    def _propagate(self, lqs: Tensor, walk: BranchWalk, trunk: nn.Module) -> List[Tensor]:
        """Run one branch; returns its T outputs (B, C, H, W) in time order."""
        b, _, _, h, w = lqs.shape
        outs: Dict[int, Tensor] = dict(enumerate(walk.history))  # position -> (B, C, H, W)
        zeros = lqs.new_zeros(b, self.num_feat, h, w)
        result: List[Tensor] = [zeros] * len(walk.frames)
        for p, i in enumerate(walk.frames, start=len(walk.history)):
            real = walk.real(p - 1, b)
            feat_prop = zeros
            if any(real):
                warped = flow_warp(outs[p - 1], walk.flows[p].permute(0, 2, 3, 1))  # (B, C, H, W)
                feat_prop = select(real, warped, zeros)
            feat_prop = trunk(torch.cat([lqs[:, i], feat_prop], dim=1))  # (B, C, H, W)
            outs[p] = feat_prop
            result[i] = feat_prop
        return result

    def _upsample(self, lq: Tensor, feat_backward: Tensor, feat_forward: Tensor) -> Tensor:
        """(B, 3, H, W) frame and its two branch features (B, C, H, W) -> (B, 3, 4H, 4W)."""
        out = self.lrelu(self.fusion(torch.cat([feat_backward, feat_forward], dim=1)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))  # (B, C, 2H, 2W)
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))  # (B, 64, 4H, 4W)
        out = self.lrelu(self.conv_hr(out))
        out = self.conv_last(out)
        return out + F.interpolate(lq, scale_factor=4, mode='bilinear', align_corners=False)
