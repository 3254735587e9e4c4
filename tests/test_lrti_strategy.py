"""The LRTI training strategy (train.lrti) in LRTIModel, in-process with tiny nets on synthetic long-clip batches.

Batches have the shape LRTILongClipDataset gives after batching: lq (B, L, 3, h, w), gt (B, N, T, 3, 4h, 4w),
starts (B, N). SpyNet is replaced by tests/_flow_stub.TinyFlow where the subject is propagation.
"""
import logging

import pytest
import torch
from conftest import make_model
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from lrti_plugin.models import truncated_bptt as tbptt
from lrti_plugin.models.lrti_options import LRTIOptions

GEOMETRY = {'long_frames': 5, 'clip_frames': 2, 'num_clips': 2}
STARTS = [[0, 3], [2, 1]]  # per sample: both ends and the middle, samples differ
VSR_TINY = dict(type='LRTIVSR', num_feat=8, num_heads=2, window_size=4, num_groups=1, depth=1, mlp_ratio=2,
                mid_channels=8, num_extract_block=1, spynet_path=None, drop_path_rate=0.0, use_checkpoint=True)
VSRPP_TINY = dict(type='LRTIBasicVSRPP', mid_channels=8, num_blocks=1, spynet_path=None)


def lrti_model(tmp_path, device, lrti=None, geometry=None, overrides=None, stub_flow=True, dtype=torch.float32):
    """An LRTIModel with ``train.lrti = lrti`` and the dataset geometry; TinyFlow in place of SpyNet."""
    geo = {**GEOMETRY, **(geometry or {})}
    return make_model(tmp_path, tmp_path, device, {'train.lrti': dict(lrti or {}), **(overrides or {})},
                      lrti_geometry=geo, tiny_flow=stub_flow, dtype=dtype)


def long_batch(starts=STARTS, length=5, clip=2, size=36, dtype=torch.float32, device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)
    b, n = len(starts), len(starts[0])
    return {
        'lq': torch.rand(b, length, 3, size, size, generator=g, dtype=dtype).to(device),
        'gt': torch.rand(b, n, clip, 3, 4 * size, 4 * size, generator=g, dtype=dtype).to(device),
        'starts': torch.tensor(starts, dtype=torch.int64),
        'key': ['a'] * b,
    }


def long_pass_outputs(net, lq, starts, clip):
    """The long pass's own outputs on every window, window-major: (N*B, T, 3, sH, sW)."""
    was_training = net.training
    with torch.no_grad():
        out = net.eval()(lq)  # (B, L, 3, sH, sW)
    net.train(was_training)
    b, n = len(starts), len(starts[0])
    return torch.stack([out[i, starts[i][j]:starts[i][j] + clip] for j in range(n) for i in range(b)])


def tensors_of(states):
    ctx = [] if states.context is None else [*states.context.feats.values()]
    return [*states.feats.values(), states.lqs, *ctx]


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize('block, geometry, match', [
    ({'mdoe': 'batch'}, {}, 'train.lrti.mdoe: unknown key; did you mean mode[?]'),
    ({'clip_frames': 3}, {}, r'train.lrti.clip_frames: unknown key \(the window geometry is set in datasets.train'),
    ({'mode': 'parallel'}, {}, 'train.lrti.mode.*parallel'),
    ({'mode': 1}, {}, r"train.lrti.mode: expected one of \['batch', 'sequential'\], got 1"),
    ({'long_pass_ema': 'yes'}, {}, "train.lrti.long_pass_ema: expected true/false, got 'yes'"),
    ({}, {'clip_frames': 7}, r'clip_frames \(7\) must not exceed datasets.train.long_frames \(5\)'),
    ({}, {'num_clips': 0}, 'datasets.train.num_clips: expected a positive int, got 0'),
    ({}, {'long_frames': 6.0}, 'datasets.train.long_frames: expected a positive int, got 6.0'),
])
def test_bad_options_are_rejected(block, geometry, match):
    opt = {'train': {'lrti': block}, 'datasets': {'train': {**GEOMETRY, **geometry}}}
    with pytest.raises(ValueError, match=match):
        LRTIOptions.from_options(opt)


def test_options_defaults_absent_block_and_missing_geometry():
    assert LRTIOptions.from_options({'train': {}}) is None
    opts = LRTIOptions.from_options({'train': {'lrti': None}, 'datasets': {'train': dict(GEOMETRY)}})
    assert (opts.mode, opts.init, opts.long_pass_ema, opts.log_cache) == ('batch', 'cached', False, True)
    assert (opts.long_frames, opts.clip_frames, opts.num_clips) == (5, 2, 2)
    with pytest.raises(ValueError, match="type 'LRTIRecurrentDataset'.*clip_frames, num_clips"):
        LRTIOptions.from_options({'train': {'lrti': {}},
                                  'datasets': {'train': {'type': 'LRTIRecurrentDataset', 'long_frames': 6}}})


@pytest.mark.parametrize('lrti, geometry, overrides, match', [
    ({'bogus': 1}, {}, {}, 'train.lrti.bogus: unknown key; known keys'),
    ({}, {'clip_frames': 9}, {}, 'clip_frames'),
    ({}, {'num_clips': 0}, {}, 'num_clips'),
    ({}, {}, {'network_g': {'type': 'BasicVSR', 'num_feat': 8, 'num_block': 1}}, "'BasicVSR'.*protocol"),
    ({'long_pass_ema': True}, {}, {}, 'ema_decay'),
    ({}, {}, {'train.use_amp': 1}, 'train.use_amp: expected true/false, got 1'),
    ({}, {}, {'train.use_amp': True, 'train.amp_dtype': 'fp16'}, "train.amp_dtype: .*got 'fp16'"),
])
def test_model_start_up_errors(tmp_path, device, lrti, geometry, overrides, match):
    with pytest.raises(ValueError, match=match):
        lrti_model(tmp_path, device, lrti, geometry, overrides, stub_flow=False)


# ------------------------------------------------------------------------------------------ the strategy
def test_long_pass_states_carry_no_gradient(tmp_path, device):
    model = lrti_model(tmp_path, device)
    lq = long_batch(device=device)['lq']
    with torch.enable_grad():
        states = tbptt.long_pass(model.net_g, lq)
    assert model.net_g.training, 'train mode must be restored'
    assert all(not t.requires_grad and t.grad_fn is None for t in tensors_of(states))
    init = tbptt.window_batch(lq, long_batch(device=device)['gt'], torch.tensor(STARTS), states)[2]
    assert all(not t.requires_grad for t in [*init.feats.values(), init.lqs_before, init.lqs_after])


class BasicProtocolOnly(torch.nn.Module):
    """A net that speaks the basic protocol (init_states, return_states) but has no ``states_only``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, lqs, init_states=None, return_states=False):
        return self.net(lqs, init_states=init_states, return_states=return_states)


def test_long_pass_skips_the_reconstruction_or_drops_the_output(tmp_path, device, monkeypatch):
    model = lrti_model(tmp_path, device)
    lq = long_batch(device=device)['lq']
    basic = tbptt.long_pass(BasicProtocolOnly(model.net_g), lq)  # whole forward, output dropped
    assert tbptt.supports_protocol(BasicProtocolOnly(model.net_g))

    def fail(*args):
        raise AssertionError('the long pass ran the reconstruction')

    monkeypatch.setattr(model.net_g, 'reconstruct', fail)
    states = tbptt.long_pass(model.net_g, lq)
    assert states.feats.keys() == basic.feats.keys()
    assert all(torch.equal(states.feats[k], basic.feats[k]) for k in basic.feats)


def _grads(net):
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def test_step_is_truncated_bptt_with_loss_on_windows_only(tmp_path, device):
    model = lrti_model(tmp_path, device, overrides={'train.optim_g.lr': 0.0})
    data = long_batch(device=device)
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    got = _grads(model.net_g)

    # By hand: no-grad long pass, windows from its states, Charbonnier on the window outputs.
    net, lq = model.net_g, data['lq']
    clips, gts, init = tbptt.window_batch(lq, data['gt'], data['starts'], tbptt.long_pass(net, lq))
    net.zero_grad()
    out = net(clips, init_states=init)
    loss = model.cri_pix(out, gts)
    loss.backward()
    assert model.log_dict['l_pix'] == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(model.output, out.detach())
    assert got.keys() == _grads(net).keys() and len(got) == len(list(net.parameters()))
    for name, grad in _grads(net).items():
        torch.testing.assert_close(got[name], grad, msg=name)

    # Contrast: full back-propagation through the long pass gives other gradients, so leakage would show.
    net.zero_grad()
    _, states = net(lq, return_states=True)
    model.cri_pix(net(clips, init_states=tbptt.window_batch(lq, data['gt'], data['starts'], states)[2]),
                  gts).backward()
    full = _grads(net)
    assert any(not torch.allclose(got[n], full[n]) for n in got if 'trunk' in n)


def test_windows_reproduce_the_long_pass_float64(tmp_path, device):
    starts = [[1], [3]]  # the middle and the end (the start is in test_sequential_mode_...)
    model = lrti_model(tmp_path, device, geometry={'num_clips': 1}, overrides={'train.optim_g.lr': 0.0},
                       dtype=torch.float64)
    data = long_batch(starts, dtype=torch.float64, device=device)
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    want = long_pass_outputs(model.net_g, data['lq'], starts, 2)
    torch.testing.assert_close(model.output, want, rtol=0, atol=1e-10)
    # Windows from zero states (plain short-clip training) are not exact: the gap the strategy closes.
    clips = tbptt.window_batch(data['lq'], data['gt'], data['starts'], None)[0]
    with torch.no_grad():
        assert (model.net_g(clips) - want).abs().max() > 1e-4


def test_one_step_changes_parameters_but_a_frozen_flow_and_logs_cache(tmp_path, device):
    model = lrti_model(tmp_path, device, overrides={'train.fix_flow': 5})
    before = {n: p.detach().clone() for n, p in model.net_g.named_parameters()}
    model.feed_data(long_batch(device=device))
    model.optimize_parameters(current_iter=1)
    log = model.get_current_log()
    assert torch.isfinite(torch.tensor(log['l_pix']))
    for name, param in model.net_g.named_parameters():
        assert torch.equal(before[name], param.detach()) == ('spynet' in name), name
    b, length, n, t, c, hw, k = 2, 5, 2, 2, 8, 36 * 36, 1  # LRTIBasicVSR: 2 branches, order 1
    assert log['cache_long_mib'] * 2**20 == b * length * (2 * c + 3) * hw * 4
    assert log['cache_windows_mib'] * 2**20 == n * b * k * (2 * c + 2 * 3) * hw * 4
    assert 0 < log['long_pass_share'] < 1
    assert model.output.shape == (n * b, t, 3, 144, 144)


def test_sequential_mode_makes_one_step_per_window(tmp_path, device):
    model = lrti_model(tmp_path, device, {'mode': 'sequential'}, overrides={'train.optim_g.lr': 0.0})
    data = long_batch(device=device)
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    steps = {int(s['step']) for s in model.optimizer_g.state.values()}
    assert steps == {2}
    torch.testing.assert_close(model.output, long_pass_outputs(model.net_g, data['lq'], STARTS, 2), rtol=1e-4,
                               atol=1e-5)


def test_long_pass_ema_uses_the_ema_net(tmp_path, device, monkeypatch):
    model = lrti_model(tmp_path, device, {'long_pass_ema': True}, overrides={'train.ema_decay': 0.999})
    seen = []
    real = tbptt.long_pass
    monkeypatch.setattr(tbptt, 'long_pass', lambda net, lqs: seen.append(net) or real(net, lqs))
    model.feed_data(long_batch(device=device))
    model.optimize_parameters(current_iter=1)
    assert seen == [model.net_g_ema]
    assert not model.net_g_ema.training and model.net_g.training


def test_init_zeros_skips_the_long_pass_and_needs_no_protocol(tmp_path, device, monkeypatch):
    monkeypatch.setattr(tbptt, 'long_pass', lambda *a: pytest.fail('init: zeros must not run a long pass'))
    model = lrti_model(tmp_path, device, {'init': 'zeros'},
                       overrides={'network_g': {'type': 'BasicVSR', 'num_feat': 8, 'num_block': 1}})
    model.feed_data(long_batch(device=device))
    model.optimize_parameters(current_iter=1)
    assert model.log_dict['cache_long_mib'] == 0 and model.log_dict['cache_windows_mib'] == 0


def test_batch_errors_and_plain_validation_data(tmp_path, device):
    model = lrti_model(tmp_path, device)
    good = long_batch(device=device)
    for bad, match in (({'starts': torch.tensor([[0, 4], [0, 0]])}, 'do not fit'),
                       ({'starts': torch.tensor([[0.0, 1.0], [0.0, 1.0]])}, 'integers'),
                       ({'gt': good['gt'][:, :1]}, 'N=2'), ({'gt': None}, 'needs gt')):
        with pytest.raises(ValueError, match=match):
            model.feed_data({k: v for k, v in {**good, **bad}.items() if v is not None})
    model.feed_data({'lq': good['lq'][:1, :2], 'gt': good['gt'][:1, 0]})  # a validation clip: unchanged
    model.test()
    assert model.output.shape == (1, 2, 3, 144, 144)
    with pytest.raises(ValueError, match='no starts'):
        model.optimize_parameters(current_iter=1)
    plain = make_model(tmp_path, tmp_path, device)
    with pytest.raises(ValueError, match='needs train.lrti'):
        plain.feed_data(good)


@pytest.mark.parametrize('arch', ['LRTIVSR', 'LRTIBasicVSRPP'])
def test_other_archs_reproduce_the_long_pass(tmp_path, device, arch):
    # BasicVSR++ needs LR >= 64 and its reconstruction runs 64 channels at 4x: its clips stay shorter.
    net_opt, size, length, clip = (VSR_TINY, 36, 4, 2) if arch == 'LRTIVSR' else (VSRPP_TINY, 64, 3, 1)
    geometry = {'long_frames': length, 'clip_frames': clip, 'num_clips': 1}
    model = lrti_model(tmp_path, device, geometry=geometry, overrides={'network_g': net_opt, 'train.optim_g.lr': 0.0})
    data = long_batch(starts=[[1]], length=length, clip=clip, size=size, device=device)
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    torch.testing.assert_close(model.output, long_pass_outputs(model.net_g, data['lq'], [[1]], clip), rtol=1e-4,
                               atol=1e-5)


def test_ddp_window_pass_through_the_wrapper(tmp_path, device):
    """Single-process gloo DDP: the long pass bypasses the wrapper; the N window passes of ``sequential``
    (N forward/backward pairs per iteration, so also the reducer's reuse) go through it."""
    if device.type != 'cpu':
        pytest.skip('gloo on the CPU')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        model = lrti_model(tmp_path, device, {'mode': 'sequential'}, overrides={'train.optim_g.lr': 0.0})
        model.opt['dist'] = True
        model.net_g = model.model_to_device(model.net_g)
        assert isinstance(model.net_g, DistributedDataParallel)
        data = long_batch(device=device)
        model.feed_data(data)
        model.optimize_parameters(current_iter=1)
        assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
        want = long_pass_outputs(model.net_g.module, data['lq'], STARTS, 2)
        torch.testing.assert_close(model.output, want, rtol=1e-4, atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_long_clip_dataset_batches_train(tiny_data, tmp_path, device):
    """LRTILongClipDataset -> DataLoader -> feed_data/optimize_parameters: the batch contract holds."""
    from lrti_plugin.data.long_clip_dataset import LRTILongClipDataset

    model = lrti_model(tmp_path, device, {'mode': 'sequential'}, geometry={'long_frames': 6})
    ds_opt = {'name': 'long', 'type': 'LRTILongClipDataset', 'dataroot_gt': str(tiny_data / 'train_GT.lmdb'),
              'dataroot_lq': str(tiny_data / 'train_GT_LRx4.lmdb'), 'io_backend': {'type': 'lmdb'},
              'meta_info_file': str(tiny_data / 'train_GT_meta_info.txt'), 'scale': 4, 'gt_size': 144,
              'long_frames': 6, 'clip_frames': 2, 'num_clips': 2, 'window_sampling': 'random', 'use_hflip': True,
              'use_rot': True, 'random_reverse': True}
    loader = torch.utils.data.DataLoader(LRTILongClipDataset(ds_opt), batch_size=2, shuffle=True)
    data = next(iter(loader))
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    assert model.output.shape == (4, 2, 3, 144, 144)


# ------------------------------------------------------------------------------------------ mixed precision
ARCH_CASES = {  # network options, LR size, L, T (N = 1); BasicVSR++ needs LR >= 64
    'LRTIBasicVSR': (None, 36, 4, 2),
    'LRTIVSR': (VSR_TINY, 36, 4, 2),
    'LRTIBasicVSRPP': (VSRPP_TINY, 64, 3, 1),
}


def _amp_pair(tmp_path, device, arch, amp_dtype):
    """Two models with the same weights: float32, and ``train.use_amp`` in ``amp_dtype``; and their batch."""
    net_opt, size, length, clip = ARCH_CASES[arch]
    geometry = {'long_frames': length, 'clip_frames': clip, 'num_clips': 1}
    overrides = {'network_g': net_opt} if net_opt else {}
    fp32 = lrti_model(tmp_path, device, geometry=geometry, overrides=overrides)
    amp = lrti_model(tmp_path, device, geometry=geometry,
                     overrides={**overrides, 'train.use_amp': True, 'train.amp_dtype': amp_dtype})
    amp.net_g.load_state_dict(fp32.net_g.state_dict())
    return fp32, amp, long_batch(starts=[[1]], length=length, clip=clip, size=size, device=device)


@pytest.mark.parametrize('arch', list(ARCH_CASES))
def test_bfloat16_autocast_trains_every_arch(tmp_path, device, arch):
    """``use_amp`` with bfloat16 runs the long pass and the window pass under autocast, with no loss scaling.

    The outputs of the first step (before any update) differ from float32's on the same weights, but only
    by bfloat16 rounding; the step is finite and moves the weights. For BasicVSR++ this runs the float32
    island of the deformable alignment (no bfloat16 deform_conv2d exists on a CPU).
    """
    fp32, amp, data = _amp_pair(tmp_path, device, arch, 'bfloat16')
    assert amp.amp_dtype == torch.bfloat16 and not amp.grad_scaler.is_enabled()
    before = {k: v.clone() for k, v in amp.net_g.state_dict().items()}
    for model in (fp32, amp):
        model.feed_data(data)
        model.optimize_parameters(current_iter=1)
        assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    diff = (amp.output.float() - fp32.output).abs().max().item()
    assert 0 < diff < 0.1, f'bfloat16 vs float32 output: max |diff| = {diff}'
    assert any(not torch.equal(before[k], v) for k, v in amp.net_g.state_dict().items())


def test_float16_grad_scaler_skips_bad_steps_and_resumes(tmp_path, device):
    """float16: a GradScaler scales the loss; a non-finite step is skipped (weights kept, scale halved); the
    scaler's state goes into the training state and comes back on resume."""
    _, model, data = _amp_pair(tmp_path, device, 'LRTIBasicVSR', 'float16')
    assert model.amp_dtype == torch.float16 and model.grad_scaler.is_enabled()
    weights = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    assert any(not torch.equal(weights[k], v) for k, v in model.net_g.state_dict().items())
    scale = model.grad_scaler.get_scale()
    assert scale == 2.0**16  # torch's initial scale, not yet grown

    weights = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    bad = dict(data, lq=data['lq'].clone())
    bad['lq'][0, 1, 0, 0, 0] = float('inf')  # inside the window (start 1): the loss is not finite
    model.feed_data(bad)
    model.optimize_parameters(current_iter=2)
    assert all(torch.equal(weights[k], v) for k, v in model.net_g.state_dict().items()), 'the bad step was taken'
    assert model.grad_scaler.get_scale() == scale / 2
    assert model.log_dict['skipped_steps'] == 1

    model.save_training_state(epoch=0, current_iter=2)
    state = torch.load(tmp_path / 'exp' / 'states' / '2.state', map_location='cpu', weights_only=False)
    fresh = lrti_model(tmp_path, device, overrides={'train.use_amp': True, 'train.amp_dtype': 'float16'})
    fresh.resume_training(state)
    assert fresh.grad_scaler.get_scale() == scale / 2
    assert fresh.grad_scaler.state_dict() == model.grad_scaler.state_dict()


@pytest.mark.parametrize('resume_amp, saved_scaler, warning', [
    ({'train.use_amp': True, 'train.amp_dtype': 'float16'}, False, 'no GradScaler state'),
    ({}, True, 'GradScaler state but float16 mixed precision is off'),
    ({'train.use_amp': True, 'train.amp_dtype': 'bfloat16'}, True, 'GradScaler state but float16'),
])
def test_resume_across_precisions_warns(tmp_path, device, resume_amp, saved_scaler, warning):
    scaler_state = {'scale': 1024.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000,
                    '_growth_tracker': 3}
    model = lrti_model(tmp_path, device)
    model.save_training_state(epoch=0, current_iter=1)
    state = torch.load(tmp_path / 'exp' / 'states' / '1.state', map_location='cpu', weights_only=False)
    state['grad_scaler'] = scaler_state if saved_scaler else {}
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger('basicsr').addHandler(handler)
    try:
        fresh = lrti_model(tmp_path, device, overrides=resume_amp)
        fresh.resume_training(state)
    finally:
        logging.getLogger('basicsr').removeHandler(handler)
    assert any(warning in r.getMessage() for r in records), [r.getMessage() for r in records]
    if fresh.grad_scaler.is_enabled():
        assert fresh.grad_scaler.get_scale() == 2.0**16  # started afresh
