"""LRTIBasicVSRPP: BasicSR compatibility (as built on a CUDA machine), gradients, checks, exactness.

How the comparison with BasicSR is made sound on a CPU: BasicSR's ``BasicVSRPlusPlus`` builds its
``SecondOrderDeformableAlignment`` modules only if ``torch.cuda.is_available()``; we patch that to
return True *while constructing it*, so it is the network a CUDA machine builds. Its forward then
runs on the CPU unchanged: in basicsr 1.4.2 that module's forward already calls
``torchvision.ops.deform_conv2d`` (not the compiled mmcv/BasicSR kernel), and nothing else in its
forward touches CUDA for clips up to ``cpu_cache_length`` frames. So both networks run the same
operators with the same weights, and any difference is ours. The last offset conv is zero at init
(offsets = flows); the tests randomise it so the learned offsets and masks are exercised.
"""
from unittest import mock  # noqa: I001  (lrti_plugin must be imported before basicsr)

import pytest
import torch
from _exactness import (
    assert_batched_windows_exact,
    assert_gradient_reaches_every_parameter,
    assert_states_matter,
    assert_states_only_matches,
    assert_window_exact,
    random_clip,
)
from _flow_stub import use_tiny_flow

import lrti_plugin  # noqa: F401  (registers the archs; shim before basicsr)
from basicsr.archs.basicvsrpp_arch import BasicVSRPlusPlus
from basicsr.utils.registry import ARCH_REGISTRY
from lrti_plugin.archs.basicvsrpp_arch import LRTIBasicVSRPP

TINY = dict(mid_channels=8, num_blocks=1)


def _basicsr_as_on_cuda(**kwargs):
    with mock.patch('torch.cuda.is_available', return_value=True):
        return BasicVSRPlusPlus(**kwargs)


def _randomise_offsets(net, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.deform_align.values():
            last = m.conv_offset[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 0.05)
            last.bias.copy_(torch.randn(last.bias.shape, generator=g) * 0.1)


def _pair(dtype=torch.float64, tiny_flow=True):
    torch.manual_seed(0)
    ref = _basicsr_as_on_cuda(**TINY)
    _randomise_offsets(ref)
    net = LRTIBasicVSRPP(**TINY)
    net.load_state_dict(ref.state_dict(), strict=True)
    ref, net = ref.to(dtype).eval(), net.to(dtype).eval()
    if tiny_flow:
        use_tiny_flow(ref, net)
    return ref, net


def _clip(b=1, t=5, h=64, w=64, dtype=torch.float64):
    return random_clip(b, t, h, w, dtype)


def test_registered_and_alignment_built_without_cuda():
    with mock.patch('torch.cuda.is_available', return_value=False):
        net = ARCH_REGISTRY.get('LRTIBasicVSRPP')(**TINY)
    assert sorted(net.deform_align) == sorted(['backward_1', 'forward_1', 'backward_2', 'forward_2'])


def test_parameter_count_independent_of_cuda():
    counts = []
    for cuda in (False, True):
        with mock.patch('torch.cuda.is_available', return_value=cuda):
            counts.append(sum(p.numel() for p in LRTIBasicVSRPP(**TINY).parameters()))
    assert counts[0] == counts[1] == sum(p.numel() for p in _basicsr_as_on_cuda(**TINY).parameters())


def test_checkpoint_loads_strictly_both_ways(tmp_path):
    ref = _basicsr_as_on_cuda(**TINY)
    path = tmp_path / 'basicvsrpp.pth'
    torch.save({'params': ref.state_dict()}, path)
    net = LRTIBasicVSRPP(**TINY)
    net.load_state_dict(torch.load(path)['params'], strict=True)
    assert list(net.state_dict()) == list(ref.state_dict())
    back = _basicsr_as_on_cuda(**TINY)
    back.load_state_dict(net.state_dict(), strict=True)


def test_output_equals_basicsr_with_real_spynet():
    ref, net = _pair(tiny_flow=False)
    lqs = _clip(t=3)
    with torch.no_grad():
        expected, got = ref(lqs), net(lqs)
    assert got.shape == (1, 3, 3, 256, 256)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_mirror_extended_input_matches_basicsr_and_sets_nothing():
    ref, net = _pair()
    half = _clip(t=2)
    lqs = torch.cat([half, half.flip(1)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(net(lqs), ref(lqs), rtol=0, atol=1e-12)
    assert not hasattr(net, 'is_mirror_extended') and not hasattr(net, 'cpu_cache')


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = LRTIBasicVSRPP(**TINY).train()
    _randomise_offsets(net)
    assert_gradient_reaches_every_parameter(net, _clip(t=3, h=64, w=64, dtype=torch.float32))


@pytest.mark.parametrize('kwargs,shape', [({}, (1, 2, 3, 63, 64)), ({}, (1, 2, 3, 64, 40)),
                                          ({'is_low_res_input': False}, (1, 2, 3, 128, 256))])
def test_too_small_input_raises_value_error_naming_shape(kwargs, shape):
    net = LRTIBasicVSRPP(**TINY, **kwargs)
    with pytest.raises(ValueError, match=r'at least 64.*' + r', '.join(map(str, shape))):
        net(torch.rand(*shape))


@pytest.mark.parametrize('key,value', [('mid_channels', 12), ('num_blocks', -1), ('is_low_res_input', 'yes'),
                                       ('cpu_cache_length', 1.5), ('max_residue_magnitude', 0)])
def test_bad_constructor_value_names_key(key, value):
    with pytest.raises(ValueError, match=key):
        LRTIBasicVSRPP(**{**TINY, key: value})


def test_missing_spynet_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing_spynet'):
        LRTIBasicVSRPP(**TINY, spynet_path=str(tmp_path / 'missing_spynet.pth'))


@pytest.fixture(scope='module')
def long_pass():
    """(net, lqs, full output, states) of one float64 eval pass over 7 frames."""
    _, net = _pair()
    lqs = _clip(b=1, t=7)
    with torch.no_grad():
        full, states = net(lqs, return_states=True)
    return net, lqs, full, states


@pytest.mark.parametrize('start,length', [(0, 3), (2, 3), (4, 3), (1, 1)])
def test_window_pass_reproduces_long_pass_float64(long_pass, start, length):
    assert_window_exact(*long_pass, start, length)


def test_batched_windows_of_mixed_borders(long_pass):
    assert_batched_windows_exact(*long_pass, [0, 1, 3, 5], 2, (0, 1, 2, 2), (2, 2, 2, 0))


def test_states_only_skips_the_reconstruction(long_pass):
    net, lqs, _, states = long_pass
    assert_states_only_matches(net, lqs)
    assert_states_only_matches(net, lqs[:, 2:5], init_states=states.window(2, 3))


def test_window_pass_with_real_spynet_float32():
    _, net = _pair(torch.float32, tiny_flow=False)
    lqs = _clip(t=5, dtype=torch.float32)
    with torch.no_grad():
        full, states = net(lqs, return_states=True)
    assert_window_exact(net, lqs, full, states, 2, 2, atol=1e-5)
    assert_states_matter(net, lqs, full, 2, 2, min_diff=1e-4)


def test_same_size_input_window_pass():
    torch.manual_seed(0)
    net = LRTIBasicVSRPP(**TINY, is_low_res_input=False).double().eval()
    use_tiny_flow(net)
    lqs = _clip(t=4, h=256, w=256)
    with torch.no_grad():
        full, states = net(lqs, return_states=True)
        clip = net(lqs[:, 1:3], init_states=states.window(1, 2))
    assert full.shape == lqs.shape
    torch.testing.assert_close(clip, full[:, 1:3], rtol=0, atol=1e-10)


def test_alignment_runs_in_float32_under_autocast():
    """Under autocast the deformable alignment gets float32 inputs (no reduced-precision deform_conv2d on a
    CPU), the rest of the network runs in the autocast dtype, and the output stays close to float32's.
    (bfloat16 only: CPU float16 kernels are slow, and the float32 island does not depend on the dtype.)"""
    dtype = torch.bfloat16
    net = LRTIBasicVSRPP(**TINY).eval()
    use_tiny_flow(net)
    _randomise_offsets(net)
    seen, backbone = [], []
    for m in net.deform_align.values():
        m.register_forward_pre_hook(lambda _m, args: seen.extend(a.dtype for a in args))
    net.backbone['forward_1'].register_forward_hook(lambda _m, _args, out: backbone.append(out.dtype))
    lqs = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net(lqs)
        seen.clear()
        backbone.clear()
        with torch.autocast('cpu', dtype=dtype):
            got = net(lqs)
    assert seen and set(seen) == {torch.float32}
    assert backbone and set(backbone) == {dtype}
    assert got.dtype == torch.float32
    diff = (got - want).abs().max().item()
    assert 0 < diff < 0.05, diff
