"""A cheap per-pair flow network for tests whose subject is propagation, not SpyNet.

SpyNet resizes every pair to a multiple of 32 and runs 6 levels of 7x7 convolutions: in float64 on
this project's 2-core machines it dominates every test. The exactness of window passes only
requires that flows depend on the two frames of a pair alone, which this stub also satisfies. Tests
that compare against BasicSR or that test SpyNet handling keep the real SpyNet.
"""
import contextlib

import torch
from torch import nn


class TinyFlow(nn.Module):
    """``flow = 3 * tanh(conv([ref, supp]))``: (N, 3, H, W) x2 -> (N, 2, H, W), sub-pixel and non-zero.

    Its weights come from a private generator (``seed``): building one never moves the global RNG, and
    every TinyFlow of a seed is the same.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(6, 2, 3, 1, 1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(torch.empty_like(self.conv.weight).uniform_(-0.14, 0.14, generator=g))
            self.conv.bias.copy_(torch.empty_like(self.conv.bias).uniform_(-0.14, 0.14, generator=g))

    def forward(self, ref, supp):
        return 3 * torch.tanh(self.conv(torch.cat([ref, supp], dim=1)))


def use_tiny_flow(*nets, seed=0):
    """Give each net the same TinyFlow (same weights) in place of its SpyNet; returns the nets."""
    for net in nets:
        net.spynet = TinyFlow(seed).to(next(net.parameters()).dtype)
    return nets


@contextlib.contextmanager
def tiny_flow_archs(enabled: bool = True, seed: int = 0):
    """While active, the archs build a TinyFlow where they would build SpyNet (so a model is built with it)."""
    if not enabled:
        yield
        return
    from lrti_plugin.archs import basicvsr_arch, basicvsrpp_arch, lrti_vsr_arch

    modules = (basicvsr_arch, basicvsrpp_arch, lrti_vsr_arch)
    saved = [m.build_spynet for m in modules]
    for m in modules:
        m.build_spynet = lambda path: TinyFlow(seed)
    try:
        yield
    finally:
        for m, original in zip(modules, saved):
            m.build_spynet = original
