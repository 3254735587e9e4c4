"""lrti_plugin.utils.option_check: every key of every section is known, with a did-you-mean; types checked."""
import pytest
from conftest import REPO, tiny_options, to_lrti

from lrti_plugin.utils.option_check import check_options
from lrti_plugin.utils.options import load_options


def _set(opt, dotted, value):
    *parents, last = dotted.split('.')
    node = opt
    for key in parents:
        node = node[key]
    node[last] = value
    return opt


@pytest.fixture
def opt(tiny_data):
    return tiny_options(tiny_data, 'check')


@pytest.mark.parametrize('dotted, value, message', [
    ('train.use_ampp', True, 'train.use_ampp: unknown key; did you mean use_amp?'),
    ('train.ema_decy', 0.99, 'train.ema_decy: unknown key; did you mean ema_decay?'),
    ('train.fix_flwo', 10, 'train.fix_flwo: unknown key; did you mean fix_flow?'),
    ('val.save_imgs', True, 'val.save_imgs: unknown key; did you mean save_img?'),
    ('logger.print_frq', 10, 'logger.print_frq: unknown key; did you mean print_freq?'),
    ('path.pretrain_netwrok_g', None, 'path.pretrain_netwrok_g: unknown key; did you mean pretrain_network_g?'),
    ('netwrok_g', {}, 'options.netwrok_g: unknown key; did you mean network_g?'),
    ('network_g.num_fet', 8, 'network_g.num_fet: unknown key; did you mean num_feat?'),
    ('network_g.num_feat', 8.0, 'network_g.num_feat: expected an int, got 8.0'),
    ('network_g.spynet_path', 3, 'network_g.spynet_path: expected a string or null, got 3'),
    ('datasets.train.gt_sise', 64, 'datasets.train.gt_sise: unknown key; did you mean gt_size?'),
    ('datasets.val.cache_dat', True, 'datasets.val.cache_dat: unknown key; did you mean cache_data?'),
    ('train.optim_g.beta', [0.9, 0.99], 'train.optim_g.beta: unknown key; did you mean betas?'),
    ('train.optim_g.type', 'AdamWW', "train.optim_g.type: unknown optimizer 'AdamWW'; did you mean AdamW?"),
    ('train.scheduler.period', [4], 'train.scheduler.period: unknown key; did you mean periods?'),
    ('train.pixel_opt.loss_wieght', 1.0, 'train.pixel_opt.loss_wieght: unknown key; did you mean loss_weight?'),
    ('val.metrics.psnr.test_y_chanel', True, 'val.metrics.psnr.test_y_chanel: unknown key; did you mean '
                                             'test_y_channel?'),
    ('val.val_freq', 0, 'val.val_freq: expected a positive whole number, got 0'),
    ('train.total_iter', 2.5, 'train.total_iter: expected a positive whole number, got 2.5'),
    ('train.use_amp', 'yes', "train.use_amp: expected true/false, got 'yes'"),
    ('train.exact_resume', 'no', "train.exact_resume: expected true/false, got 'no'"),
    ('train.ema_decay', 1.5, r'train.ema_decay: expected a number in [0, 1), got 1.5'),
    ('network_g.type', 'BasicVSRR', "network_g.type: unknown arch 'BasicVSRR'; did you mean BasicVSR?"),
])
def test_a_bad_key_or_type_is_named_with_a_suggestion(opt, dotted, value, message):
    with pytest.raises(ValueError) as err:
        check_options(_set(opt, dotted, value), 'my.yml')
    assert str(err.value) == f'my.yml: {message}'


def test_lrti_block_and_geometry_are_checked_with_the_rest(opt):
    check_options(to_lrti(opt, mode='batch'))
    opt['datasets']['train']['num_clip'] = 2
    with pytest.raises(ValueError, match='datasets.train.num_clip: unknown key; did you mean num_clips?'):
        check_options(opt)


def test_basicsr_style_values_pass(opt):
    """Counts written as floats (``!!float 5e3``), ``num_gpu: auto``, null sections, BasicSR's run-time keys."""
    opt.update(num_gpu='auto', dist=False, rank=0, world_size=1, auto_resume=False, is_train=True, root_path='.')
    _set(opt, 'val.val_freq', 5e3)
    _set(opt, 'logger.save_checkpoint_freq', 5e3)
    _set(opt, 'train.scheduler', {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.5})
    opt['path'].update(experiments_root='x', models='x/models', training_states='x/s', log='x', visualization='v')
    check_options(opt)


@pytest.mark.parametrize('name', sorted(p.name for p in (REPO / 'options').glob('*.yml')))
def test_every_shipped_options_file_passes(name):
    check_options(load_options(str(REPO / 'options' / name)), name)
