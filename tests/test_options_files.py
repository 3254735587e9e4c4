"""Every shipped options file parses like BasicSR parses it, builds its network, and names only known keys."""
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from lrti_plugin.data import clip_io, long_clip_dataset, paired_clips, recurrent_dataset, video_test_dataset
from lrti_plugin.models.lrti_options import LRTIOptions, parse_amp
from lrti_plugin.utils.options import apply_overrides, dump_options, load_options

sys.path.insert(0, str(REPO / 'scripts'))
import reproduce  # noqa: E402

OPTION_FILES = sorted((REPO / 'options').glob('*.yml'))
DATASET_KEYS = {
    'LRTIRecurrentDataset': paired_clips.COMMON_KEYS + recurrent_dataset._KEYS,
    'LRTILongClipDataset': paired_clips.COMMON_KEYS + long_clip_dataset._KEYS,
    'LRTIVideoTestDataset': video_test_dataset._KEYS,
}


def test_there_are_option_files():
    names = {p.name for p in OPTION_FILES}
    assert {'train_lrti.yml', 'train_lrti_tiny.yml', 'train_demo.yml', 'test_lrti.yml', 'test_demo.yml'} <= names


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: p.name)
def test_options_file_is_valid(path: Path):
    import lrti_plugin

    opt = load_options(str(path))
    assert opt['plugin'] == lrti_plugin.__version__  # the tag that imports the plugin resolved
    check_options(opt, path.name, expect_lrti='lrti' in path.name and 'plain' not in path.name)


CAMPAIGN_ARMS = [(p, arm) for p in sorted((REPO / 'options' / 'reproduce').glob('*.yml'))
                 for arm in yaml.safe_load(p.read_text())['arms']]


@pytest.mark.parametrize('path, arm', CAMPAIGN_ARMS, ids=lambda v: getattr(v, 'name', v))
def test_every_campaign_arm_makes_valid_options(path: Path, arm: str):
    """Each arm of each shipped campaign (options/reproduce) is its base plus overrides: the result must be a
    valid options file, and a train.lrti block exactly when its dataset is a long-clip one."""
    camp = reproduce.load_campaign(str(path))
    opt = reproduce.arm_options(load_options(str(REPO / camp['base'])), arm, camp['arms'][arm], seed=0)
    check_options(opt, f'{path.name}:{arm}',
                  expect_lrti=opt['datasets']['train']['type'] == 'LRTILongClipDataset')


def check_options(opt: dict, where: str, expect_lrti: bool) -> None:
    """Registries know every type, datasets name only known keys, the network builds, train keys parse."""
    from basicsr.archs import build_network
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

    assert MODEL_REGISTRY.get(opt['model_type']) is not None
    for phase, ds in opt['datasets'].items():
        assert DATASET_REGISTRY.get(ds['type']) is not None
        own = DATASET_KEYS.get(ds['type'])
        if own is not None:
            clip_io.check_option_keys(ds, own, f'{where}:{phase}')
    net_opt = dict(opt['network_g'], spynet_path=None)  # weights are not part of the repo
    net = build_network(net_opt)
    assert sum(p.numel() for p in net.parameters()) > 0
    if 'train' in opt:
        lrti = LRTIOptions.from_options(opt)  # unknown keys in train.lrti, bad geometry: ValueError
        assert (lrti is not None) == expect_lrti
        assert parse_amp(opt['train']) is None  # shipped recipes train in float32 unless asked
        periods = opt['train']['scheduler'].get('periods')
        if periods is not None:
            assert sum(periods) >= opt['train']['total_iter'], 'the cosine schedule must cover total_iter'


def test_dump_then_load_round_trip(tmp_path):
    opt = load_options(str(REPO / 'options' / 'train_demo.yml'))
    apply_overrides(opt, {'train.total_iter': 7, 'network_g.num_feat': 4})
    again = load_options(dump_options(opt, str(tmp_path / 'x.yml')))
    assert again == opt
    with pytest.raises(KeyError, match='nosuchsection'):
        apply_overrides(opt, {'nosuchsection.key': 1})


def test_tiny_config_train_and_test_networks_agree():
    """The demo's test options must rebuild exactly the network the demo's training options train."""
    from basicsr.archs import build_network

    train = load_options(str(REPO / 'options' / 'train_demo.yml'))['network_g']
    test = load_options(str(REPO / 'options' / 'test_demo.yml'))['network_g']
    assert dict(train) == dict(test)
    a, b = (build_network(dict(net, spynet_path=None)) for net in (train, test))  # weights are not in the repo
    assert [(n, p.shape) for n, p in a.state_dict().items()] == [(n, p.shape) for n, p in b.state_dict().items()]
    assert isinstance(a, torch.nn.Module)
