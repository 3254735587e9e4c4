"""A cheap per-pair flow network for tests whose subject is propagation, not SpyNet.

SpyNet resizes every pair to a multiple of 32 and runs 6 levels of 7x7 convolutions: in float64 on
this project's 2-core machines it dominates every test. The exactness of window passes only
requires that flows depend on the two frames of a pair alone, which this stub also satisfies. Tests
that compare against BasicSR or that test SpyNet handling keep the real SpyNet.
"""
import torch
from torch import nn


class TinyFlow(nn.Module):
    """``flow = 3 * tanh(conv([ref, supp]))``: (N, 3, H, W) x2 -> (N, 2, H, W), sub-pixel and non-zero."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 2, 3, 1, 1)

    def forward(self, ref, supp):
        return 3 * torch.tanh(self.conv(torch.cat([ref, supp], dim=1)))


def use_tiny_flow(*nets, seed=0):
    """Give each net the same TinyFlow (same weights) in place of its SpyNet; returns the nets."""
    torch.manual_seed(seed)
    flow = TinyFlow()
    for net in nets:
        dtype = next(net.parameters()).dtype
        net.spynet = TinyFlow().to(dtype)
        net.spynet.load_state_dict(flow.state_dict())
    return nets
