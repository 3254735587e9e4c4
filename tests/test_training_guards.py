"""Guards against the LRTI-only blow-up (train.lrti.max_state_rms) and non-finite steps (train.skip_nonfinite,
train.grad_clip_norm).

The blow-up is provoked for real: the trunks' input convolutions are scaled up so that the recurrence amplifies
its state at every frame; short windows from zero states stay moderate, the long pass's states do not.
"""
import pytest
import torch
from test_lrti_strategy import long_batch, lrti_model

from lrti_plugin.models import truncated_bptt as tbptt
from lrti_plugin.models.lrti_options import LRTIOptions
from lrti_plugin.state import BoundaryStates

LONG = {'long_frames': 12, 'clip_frames': 2, 'num_clips': 2}
STARTS = [[0, 9]]  # each window sits after (backward) or before (forward) at least 9 amplifying steps


def unstable(model, gain=16.0):
    """Scale the trunks' first convolutions: each frame multiplies the propagated state by roughly ``gain``."""
    with torch.no_grad():
        for trunk in (model.net_g.forward_trunk, model.net_g.backward_trunk):
            trunk.main[0].weight.mul_(gain)
    return model


def _weights(model):
    return {k: v.clone() for k, v in model.net_g.state_dict().items()}


def _changed(model, before):
    return any(not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())


def _states(rms_rows, order=1, c=4, hw=6):
    """BoundaryStates of len(rms_rows) windows whose states have exactly the RMS given per row."""
    rows = torch.tensor(rms_rows, dtype=torch.float32).view(-1, 1, 1, 1, 1)
    feats = {'backward': torch.ones(len(rms_rows), order, c, hw, hw) * rows,
             'forward': torch.zeros(len(rms_rows), order, c, hw, hw)}
    lqs = torch.rand(len(rms_rows), order, 3, hw, hw)
    return BoundaryStates(feats, lqs, lqs.clone(), (1,) * len(rms_rows), (1,) * len(rms_rows))


def test_state_rms_and_guard_flag_only_large_or_non_finite_windows():
    init = _states([0.1, 5e3, float('nan'), 99.0])
    assert torch.allclose(tbptt.state_rms(init)[[0, 1, 3]], torch.tensor([0.1, 5e3, 99.0]))
    guarded, flags = tbptt.guard_states(init, 100.0)
    assert flags.tolist() == [False, True, True, False]
    assert guarded.num_before == (1, 0, 0, 1) and guarded.num_after == (1, 0, 0, 1)
    for row in (1, 2):  # flagged: zero states (no nan left)
        assert torch.count_nonzero(guarded.feats['backward'][row]) == 0
    for row in (0, 3):  # kept bit for bit
        assert torch.equal(guarded.feats['backward'][row], init.feats['backward'][row])
    init = _states([0.1, 0.2])
    assert tbptt.guard_states(init, 100.0)[0] is init


@pytest.mark.parametrize('block, match', [
    ({'max_state_rms': 0}, 'train.lrti.max_state_rms: expected a positive number, got 0'),
    ({'max_state_rms': 'big'}, 'max_state_rms'),
    ({'max_state_rms': True}, 'max_state_rms'),
    ({'guard_action': 'clamp'}, r"train.lrti.guard_action: expected one of \['zeros', 'skip'\], got 'clamp'"),
])
def test_bad_guard_options_are_rejected(block, match):
    with pytest.raises(ValueError, match=match):
        LRTIOptions.from_options({'train': {'lrti': block}, 'datasets': {'train': dict(LONG)}})


def test_guard_defaults():
    opts = LRTIOptions.from_options({'train': {'lrti': {}}, 'datasets': {'train': dict(LONG)}})
    assert (opts.max_state_rms, opts.guard_action) == (100.0, 'zeros')


def test_the_blow_up_is_real_and_the_guard_restarts_those_windows_from_zeros(tmp_path, device):
    torch.manual_seed(0)  # the weights' initialisation decides how fast the state grows
    data = long_batch(starts=STARTS, length=LONG['long_frames'], clip=2, device=device)
    on = unstable(lrti_model(tmp_path, device, {}, LONG))  # the default guard
    off = lrti_model(tmp_path, device, {'max_state_rms': None}, LONG)
    off.net_g.load_state_dict(on.net_g.state_dict())  # the same unstable weights
    states = tbptt.long_pass(off.net_g, data['lq'])
    assert float(tbptt.state_rms(states.window(9, 2))[0]) > 1e3, 'the long pass did not blow up'
    off.feed_data(data)
    off.optimize_parameters(current_iter=1)
    unguarded_loss = off.log_dict['l_pix']

    before = _weights(on)
    with torch.no_grad():  # flagged windows must run exactly as plain windows from zero states
        zero_start = torch.cat([on.net_g.eval()(data['lq'][:, s:s + 2]) for s in STARTS[0]])
        on.net_g.train()
    on.feed_data(data)
    on.optimize_parameters(current_iter=1)
    assert on.log_dict['guard_windows'] == 2 and on.log_dict['guard_total'] == 2
    assert on.log_dict['state_rms'] > 1e3  # logged before the guard: what it caught
    assert on.log_dict['l_pix'] < unguarded_loss / 100, (on.log_dict['l_pix'], unguarded_loss)
    assert torch.allclose(on.output, zero_start, atol=1e-5), 'the guarded windows did not start from zeros'
    assert _changed(on, before), 'action zeros still trains'


def test_guard_action_skip_keeps_the_weights(tmp_path, device):
    torch.manual_seed(0)
    model = unstable(lrti_model(tmp_path, device, {'guard_action': 'skip'}, LONG))
    before = _weights(model)
    model.feed_data(long_batch(starts=STARTS, length=LONG['long_frames'], clip=2, device=device))
    model.optimize_parameters(current_iter=1)
    assert not _changed(model, before)
    assert model.log_dict['skipped_steps'] == 1 and model.log_dict['guard_windows'] == 2


def test_healthy_states_never_trigger_the_guard(tmp_path, device):
    model = lrti_model(tmp_path, device, {}, LONG)
    model.feed_data(long_batch(starts=STARTS, length=LONG['long_frames'], clip=2, device=device))
    model.optimize_parameters(current_iter=1)
    assert model.log_dict['guard_windows'] == 0 and 0 < model.log_dict['state_rms'] < 10


@pytest.mark.parametrize('skip', [True, False])
def test_non_finite_loss_skips_the_step_in_float32(tmp_path, device, skip):
    model = lrti_model(tmp_path, device, {'max_state_rms': None}, overrides={'train.skip_nonfinite': skip})
    data = long_batch(device=device)
    data['lq'][0, 0, 0, 0, 0] = float('nan')  # inside window 0 of sample 0
    before = _weights(model)
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    finite = all(torch.isfinite(v).all() for v in model.net_g.state_dict().values())
    assert model.log_dict['nonfinite_losses'] == 1  # counted whether or not the step is skipped
    if skip:
        assert not _changed(model, before) and model.log_dict['skipped_steps'] == 1
    else:
        assert not finite, 'without the check a nan step reaches the weights'


def test_grad_clip_norm_bounds_the_gradient(tmp_path, device):
    model = lrti_model(tmp_path, device, overrides={'train.grad_clip_norm': 1e-3})
    model.feed_data(long_batch(device=device))
    model.optimize_parameters(current_iter=1)
    grads = [p.grad for p in model.net_g.parameters() if p.grad is not None]
    assert grads and float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) <= 1e-3 * 1.0001


@pytest.mark.parametrize('overrides, match', [
    ({'train.grad_clip_norm': -1}, 'train.grad_clip_norm: expected a positive number, got -1'),
    ({'train.skip_nonfinite': 'yes'}, "train.skip_nonfinite: expected true/false, got 'yes'"),
])
def test_bad_step_guard_options_are_rejected(tmp_path, device, overrides, match):
    with pytest.raises(ValueError, match=match):
        lrti_model(tmp_path, device, overrides=overrides, stub_flow=False)


def test_amp_dtype_auto_is_bfloat16_where_supported(monkeypatch):
    from lrti_plugin.models.lrti_options import parse_amp

    assert parse_amp({'use_amp': False}) is None
    assert parse_amp({'use_amp': True}, torch.device('cpu')) == torch.bfloat16
    assert parse_amp({'use_amp': True, 'amp_dtype': 'float16'}, torch.device('cpu')) == torch.float16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: False)  # e.g. a V100
    assert parse_amp({'use_amp': True}, torch.device('cuda')) == torch.float16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    assert parse_amp({'use_amp': True}, torch.device('cuda')) == torch.bfloat16
    with pytest.raises(ValueError, match='train.amp_dtype: expected one of auto'):
        parse_amp({'use_amp': True, 'amp_dtype': 'half'})
