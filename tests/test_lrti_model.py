"""LRTIModel in-process: the BasicSR defects it answers, on the CPU (or LRTI_TEST_DEVICE)."""

import pytest
import torch
from conftest import make_model, tiny_options, to_lrti

from lrti_plugin.models import lrti_model
from lrti_plugin.models.lrti_model import LRTIModel


def build_model(tiny_data, tmp_path, device, overrides=None, is_train=True, lrti_geometry=None) -> LRTIModel:
    """A tiny LRTIModel (conftest.make_model, with the real SpyNet)."""
    return make_model(tiny_data, tmp_path, device, overrides, is_train, lrti_geometry)


class SameTensorDataset(torch.utils.data.Dataset):
    """One clip whose tensors are returned *by reference* each time (as a cached dataset may)."""

    def __init__(self, t=4, h=36, w=36):
        g = torch.Generator().manual_seed(0)
        self.lq = torch.rand(t, 3, h, w, generator=g)
        self.gt = torch.rand(t, 3, 4 * h, 4 * w, generator=g)
        self.opt = {'name': 'same'}
        self.data_info = {'folder': ['clip'] * t}

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return {'lq': self.lq, 'gt': self.gt, 'folder': 'clip', 'lq_path': 'clip/00000000', 'idx': 0}


def _loader(ds):
    return torch.utils.data.DataLoader(ds, batch_size=1)


def test_validation_on_cpu_keeps_inputs_and_train_mode(tiny_data, tmp_path, device):
    model = build_model(tiny_data, tmp_path, device)
    ds = SameTensorDataset()
    model.net_g.train()
    model.validation(_loader(ds), current_iter=1, tb_logger=None, save_img=True)
    assert ds.lq.dim() == 4 and ds.gt.dim() == 4  # BasicSR squeezes the caller's tensor in place on CPU
    assert model.net_g.training, 'train mode must be restored after validation'
    psnr = model.metric_results['clip'][:, 0]
    assert psnr.shape == (4, ) and torch.all(psnr > 0) and torch.isfinite(psnr).all()
    assert len(list((tmp_path / 'exp' / 'vis' / 'same' / 'clip').glob('*_1.png'))) == 4


def test_validation_uses_ema_weights(tiny_data, tmp_path, device):
    model = build_model(tiny_data, tmp_path, device, {'train.ema_decay': 0.999})
    with torch.no_grad():
        for p in model.net_g_ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    lq = torch.rand(1, 3, 3, 36, 36, device=model.device)
    model.feed_data({'lq': lq})
    model.test()
    with torch.no_grad():
        want_ema = model.net_g_ema(lq)
        plain = model.net_g.eval()(lq)
    model.net_g.train()
    torch.testing.assert_close(model.output, want_ema)
    assert not torch.allclose(model.output, plain)
    assert not model.net_g_ema.training and model.net_g.training


def test_stream_chunk_validates_with_bounded_pieces_and_the_whole_pass_output(tiny_data, tmp_path, device,
                                                                               monkeypatch):
    from lrti_plugin.models import video_validation

    model = build_model(tiny_data, tmp_path, device, {'val.stream_chunk': 2})
    lq = torch.rand(1, 7, 3, 36, 36, device=model.device)
    with torch.no_grad():
        want = model.net_g.eval()(lq)
    model.net_g.train()
    seen = []
    real = model.net_g.propagate
    monkeypatch.setattr(model.net_g, 'propagate', lambda x, *a, **k: seen.append(x.size(1)) or real(x, *a, **k))
    model.feed_data({'lq': lq})
    model.test()
    torch.testing.assert_close(model.output, want, rtol=0, atol=1e-5)
    assert seen and max(seen) <= 2 + 2 * model.net_g.order  # no pass over the whole clip
    assert model.net_g.training
    monkeypatch.setattr(video_validation, 'stream', None)  # without the option the whole pass runs
    model.opt['val']['stream_chunk'] = None
    model.test()
    assert max(seen) == 7


def _flow_frozen(model):
    flags = {p.requires_grad for n, p in model.net_g.named_parameters() if 'spynet' in n}
    assert len(flags) == 1
    return not flags.pop()


def test_fix_flow_holds_after_a_resume(tiny_data, tmp_path, device):
    model = build_model(tiny_data, tmp_path, device, {'train.fix_flow': 10})
    assert not _flow_frozen(model)
    model._apply_fix_flow(7)  # a run resumed at iteration 7 never sees iteration 1
    assert _flow_frozen(model)
    others = [p.requires_grad for n, p in model.net_g.named_parameters() if 'spynet' not in n]
    assert all(others)
    model._apply_fix_flow(10)
    assert not _flow_frozen(model)


def test_one_step_trains_everything_but_a_frozen_flow(tiny_data, tmp_path, device):
    model = build_model(tiny_data, tmp_path, device, {'train.fix_flow': 5})
    before = {n: p.detach().clone() for n, p in model.net_g.named_parameters()}
    g = torch.Generator().manual_seed(1)
    model.feed_data({'lq': torch.rand(2, 3, 3, 36, 36, generator=g), 'gt': torch.rand(2, 3, 3, 144, 144, generator=g)})
    model.optimize_parameters(current_iter=1)
    assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    for n, p in model.net_g.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == ('spynet' not in n), n


def test_flow_lr_mul_makes_two_param_groups(tiny_data, tmp_path, device):
    model = build_model(tiny_data, tmp_path, device, {'train.flow_lr_mul': 0.25})
    groups = model.optimizer_g.param_groups
    lr = model.opt['train']['optim_g']['lr']
    assert [g['lr'] for g in groups] == pytest.approx([lr, 0.25 * lr])
    n_flow = sum(1 for n, _ in model.net_g.named_parameters() if 'spynet' in n)
    assert len(groups[1]['params']) == n_flow
    assert model.opt['train']['optim_g']['type'] == 'Adam', 'the shared option dict must not be mutated'


def test_unknown_optimizer_is_rejected(tiny_data, tmp_path, device):
    with pytest.raises(ValueError, match='Adagrad'):
        build_model(tiny_data, tmp_path, device, {'train.optim_g.type': 'Adagrad'})


def test_interrupted_save_leaves_no_checkpoint(tiny_data, tmp_path, device, monkeypatch):
    model = build_model(tiny_data, tmp_path, device)
    target = tmp_path / 'exp' / 'models' / 'net_g_3.pth'

    def broken_save(obj, f):
        f.write(b'half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(lrti_model.torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        model.save_network(model.net_g, 'net_g', 3)
    assert not target.exists()
    assert list((tmp_path / 'exp' / 'models').iterdir()) == []
    monkeypatch.undo()
    model.save(epoch=0, current_iter=3)
    assert set(torch.load(target, map_location='cpu')) == {'params'}
    state = torch.load(tmp_path / 'exp' / 'states' / '3.state', map_location='cpu', weights_only=False)
    assert state['iter'] == 3 and len(state['optimizers']) == 1


def test_schedule_shorter_than_training_is_rejected(tiny_data, tmp_path, device):
    with pytest.raises(ValueError, match='periods'):
        build_model(tiny_data, tmp_path, device, {'train.scheduler.periods': [2], 'train.total_iter': 4})
    model = build_model(tiny_data, tmp_path, device)
    assert model.opt['train']['scheduler']['type'] == 'CosineAnnealingRestartLR', 'options must not be mutated'


def test_only_rank_0_writes_checkpoints(tiny_data, tmp_path, device, monkeypatch):
    import basicsr.utils.dist_util as dist_util

    model = build_model(tiny_data, tmp_path, device)
    monkeypatch.setattr(dist_util, 'get_dist_info', lambda: (1, 2))  # this process is rank 1 of 2
    model.save(epoch=0, current_iter=3)
    assert list((tmp_path / 'exp' / 'models').iterdir()) == []
    assert list((tmp_path / 'exp' / 'states').iterdir()) == []
    monkeypatch.setattr(dist_util, 'get_dist_info', lambda: (0, 2))
    model.save(epoch=0, current_iter=3)
    assert (tmp_path / 'exp' / 'models' / 'net_g_3.pth').is_file()
    assert (tmp_path / 'exp' / 'states' / '3.state').is_file()


def test_lrti_under_data_parallel_is_refused_with_the_ddp_command(tiny_data, tmp_path, device):

    opt = to_lrti(tiny_options(tiny_data, 'dp'))
    opt.update(is_train=True, dist=False, num_gpu=2)
    with pytest.raises(ValueError, match=r'DataParallel \(num_gpu: 2 without a launcher\).*torchrun '
                                         r'--nproc_per_node=2 -m lrti_plugin.train'):
        LRTIModel(opt)


def test_slurm_launcher_outside_slurm_is_one_clear_error(monkeypatch):
    from lrti_plugin._compat import _init_dist_any_device

    monkeypatch.delenv('SLURM_PROCID', raising=False)
    with pytest.raises(ValueError, match='--launcher slurm: SLURM_PROCID is not set'):
        _init_dist_any_device('slurm')
