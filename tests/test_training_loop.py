"""Pins on LRTIModel's training loop that its other tests would not notice breaking: which GT each window is trained
against (B > 1), the long pass's mode and grad state, the EMA update, and an exact resume."""
import functools

import pytest
import torch
from test_lrti_model import build_model
from test_lrti_strategy import STARTS, long_batch, long_pass_outputs, lrti_model


def test_each_window_is_trained_against_its_own_gt_at_batch_2(tmp_path, device):
    """GT = the long pass's own outputs at each (sample, window): the windows reproduce them, so the loss is ~0
    exactly when every window meets its own GT; a swap of samples or windows makes it large."""
    model = lrti_model(tmp_path, device, overrides={'train.optim_g.lr': 0.0})
    data = long_batch(device=device)  # B = 2, N = 2, windows at different starts per sample
    clip = data['gt'].shape[2]
    out = long_pass_outputs(model.net_g, data['lq'], STARTS, clip)  # (N*B, T, ...), window-major
    b, n = len(STARTS), len(STARTS[0])
    data['gt'] = torch.stack([torch.stack([out[j * b + i] for j in range(n)]) for i in range(b)])  # (B, N, T, ...)
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    assert model.log_dict['l_pix'] < 1e-4
    swapped = dict(data, gt=data['gt'].flip(0))  # sample 0's windows against sample 1's GT
    model.feed_data(swapped)
    model.optimize_parameters(current_iter=2)
    assert model.log_dict['l_pix'] > 1e-2


def test_long_pass_runs_in_eval_mode_without_gradient_and_windows_train(tmp_path, device):
    model = lrti_model(tmp_path, device)
    net = model.net_g
    calls = []
    forward = net.forward

    @functools.wraps(forward)
    def recording(*args, **kwargs):
        calls.append({'long': kwargs.get('states_only', False) or kwargs.get('return_states', False),
                      'training': net.training, 'grad': torch.is_grad_enabled()})
        return forward(*args, **kwargs)

    net.forward = recording
    model.feed_data(long_batch(device=device))
    model.optimize_parameters(current_iter=1)
    assert [c['long'] for c in calls] == [True, False]
    assert calls[0]['training'] is False and calls[0]['grad'] is False, calls[0]
    assert calls[1]['training'] is True and calls[1]['grad'] is True, calls[1]
    assert net.training, 'the long pass must give the net back in train mode'


def test_ema_moves_towards_the_weights_at_every_step(tiny_data, tmp_path, device):
    model = build_model(tiny_data, tmp_path, device, {'train.ema_decay': 0.5})
    ema_before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    model.feed_data({'lq': torch.rand(1, 3, 3, 36, 36, generator=g), 'gt': torch.rand(1, 3, 3, 144, 144, generator=g)})
    model.optimize_parameters(current_iter=1)
    weights = model.net_g.state_dict()
    moved = 0
    for key, value in model.net_g_ema.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.5 * ema_before[key] + 0.5 * weights[key], msg=key)
            moved += not torch.equal(value, ema_before[key])
    assert moved > 0


def _plain_batches(n):
    g = torch.Generator().manual_seed(1)
    return [{'lq': torch.rand(2, 3, 3, 36, 36, generator=g), 'gt': torch.rand(2, 3, 3, 144, 144, generator=g)}
            for _ in range(n)]


def _train(model, batches, first_iter):
    for it, data in enumerate(batches, start=first_iter):
        model.update_learning_rate(it, warmup_iter=-1)  # as BasicSR's runner does before every step
        model.feed_data(data)
        model.optimize_parameters(it)


@pytest.mark.parametrize('use_amp', [False, True])
def test_resume_continues_exactly_as_an_uninterrupted_run(tiny_data, tmp_path, device, use_amp):
    """Weights, EMA, Adam's moments, the cosine schedule (and the bfloat16 autocast) come back from the saved
    checkpoint and training state: two more iterations after a resume equal iterations 3 and 4 of one run."""
    overrides = {'train.ema_decay': 0.9, 'train.use_amp': use_amp, 'train.scheduler.periods': [4],
                 'train.optim_g.lr': 1e-3}
    batches = _plain_batches(4)
    torch.manual_seed(0)
    straight = build_model(tiny_data, tmp_path / 'a', device, overrides)
    init = {k: v.clone() for k, v in straight.net_g.state_dict().items()}
    _train(straight, batches, 1)

    torch.manual_seed(0)
    first = build_model(tiny_data, tmp_path / 'b', device, overrides)
    first.net_g.load_state_dict(init)
    first.model_ema(0)
    _train(first, batches[:2], 1)
    first.save(epoch=0, current_iter=2)
    ckpt = tmp_path / 'b' / 'exp' / 'models' / 'net_g_2.pth'
    state = torch.load(tmp_path / 'b' / 'exp' / 'states' / '2.state', map_location='cpu', weights_only=False)

    resumed = build_model(tiny_data, tmp_path / 'c', device, {**overrides, 'path.pretrain_network_g': str(ckpt)})
    resumed.resume_training(state)
    _train(resumed, batches[2:], 3)
    for name, net in (('net_g', 'net_g'), ('EMA', 'net_g_ema')):
        want, got = getattr(straight, net).state_dict(), getattr(resumed, net).state_dict()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=f'{name} {key}')
    assert resumed.optimizer_g.param_groups[0]['lr'] == straight.optimizer_g.param_groups[0]['lr']
