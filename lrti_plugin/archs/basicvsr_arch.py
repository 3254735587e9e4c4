"""BasicVSR with boundary-state injection (the propagation protocol of :mod:`lrti_plugin.state`)."""
import os
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.archs.basicvsr_arch import ConvResidualBlocks
from basicsr.archs.spynet_arch import SpyNet
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from lrti_plugin.archs.propagation import History, RecurrentVSR
from lrti_plugin.archs.propagation_util import check_lr_size
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
class LRTIBasicVSR(RecurrentVSR):
    """BasicVSR (Chan et al., CVPR 2021), x4, that accepts and returns boundary states.

    Same layers and parameter names as BasicSR's ``BasicVSR``: its checkpoints load with
    ``strict=True`` and, without ``init_states``, the outputs are the same. Branches of the
    protocol: ``'backward'`` and ``'forward'``, first order (K = 1). The recurrence, window passes and
    ``states_only`` are the engine's (:class:`~lrti_plugin.archs.propagation.RecurrentVSR`); this class
    supplies the step (warp the previous output, residual trunk) and the reconstruction.

    Args:
        num_feat (int): Number of channels. Default: 64.
        num_block (int): Number of residual blocks of each propagation trunk. Default: 15.
        spynet_path (str | None): Pretrained SPyNet weights (a BasicSR ``params`` checkpoint). Default: None.
        state_max_rms (float | None): Bound on the root-mean-square of every branch output (the recurrent
            state), per sample; None: no bound (:class:`~lrti_plugin.archs.propagation.RecurrentVSR`). Default: None.
    """

    branches = ('backward', 'forward')
    order = 1

    def __init__(self, num_feat: int = 64, num_block: int = 15, spynet_path: Optional[str] = None,
                 state_max_rms: Optional[float] = None):
        super().__init__()
        expect_int('num_feat', num_feat, minimum=1)
        expect_int('num_block', num_block, minimum=0)
        self.bound_states(state_max_rms)
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

    min_input_size = SPYNET_MIN_SIZE

    def check_input(self, lqs: Tensor) -> None:
        check_lr_size(lqs, SPYNET_MIN_SIZE, 'SpyNet needs at least 33 pixels')

    def encode(self, lqs: Tensor) -> List[Tensor]:
        """BasicVSR's branches see the LR frames themselves."""
        return list(lqs.unbind(1))

    def state_shape(self, lqs: Tensor) -> Tuple[int, int, int]:
        return self.num_feat, lqs.size(3), lqs.size(4)

    def step(self, name: str, frame: Tensor, others: List[Tensor], history: History) -> Tensor:
        """Warp the previous output onto this frame (zeros at the start), then the branch's residual trunk."""
        feat_prop = history.warped(1, lambda: frame.new_zeros(frame.size(0), self.num_feat, *frame.shape[2:]))
        trunk = self.backward_trunk if name == 'backward' else self.forward_trunk
        return trunk(torch.cat([frame, feat_prop], dim=1))

    def reconstruct(self, lq: Tensor, frame: Tensor, feats: Dict[str, Tensor]) -> Tensor:
        return self._upsample(lq, feats['backward'], feats['forward'])

    def _upsample(self, lq: Tensor, feat_backward: Tensor, feat_forward: Tensor) -> Tensor:
        """(B, 3, H, W) frame and its two branch features (B, C, H, W) -> (B, 3, 4H, 4W)."""
        out = self.lrelu(self.fusion(torch.cat([feat_backward, feat_forward], dim=1)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))  # (B, C, 2H, 2W)
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))  # (B, 64, 4H, 4W)
        out = self.lrelu(self.conv_hr(out))
        out = self.conv_last(out)
        out += F.interpolate(lq, scale_factor=4, mode='bilinear', align_corners=False)  # in place, as BasicSR
        return out
