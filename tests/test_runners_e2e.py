"""End-to-end runs of the real runners in subprocesses, on the tiny config and tiny demo LMDBs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_demo_lmdbs, point_at, run_module, tiny_options, to_lrti

from lrti_plugin.utils.options import dump_options

pytestmark = pytest.mark.slow


def _experiment(cwd: Path, name: str) -> Path:
    return cwd / 'experiments' / name


def _train_log(cwd: Path, name: str) -> str:
    logs = sorted(_experiment(cwd, name).glob('train_*.log'))
    return '\n'.join(p.read_text() for p in logs)


def _check(proc: subprocess.CompletedProcess) -> None:
    tail = f'STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}'
    assert proc.returncode == 0, f'exit {proc.returncode}\n{tail}'


def test_train_validate_save_resume_test(tiny_data, tmp_path):
    name = 'e2e_train'
    # The scheduler's state (periods included) is restored on resume: give it room for the resumed iterations.
    opt = tiny_options(tiny_data, name, {'val.save_img': True, 'train.ema_decay': 0.9, 'train.scheduler.periods': [6]})
    yml = dump_options(opt, str(tmp_path / 'train.yml'))
    _check(run_module('lrti_plugin.train', ['-opt', yml], tmp_path))

    exp = _experiment(tmp_path, name)
    for f in ('models/net_g_2.pth', 'models/net_g_4.pth', 'models/net_g_latest.pth', 'training_states/2.state',
              'training_states/4.state'):
        assert (exp / f).is_file(), f
    log = _train_log(tmp_path, name)
    assert 'Model [LRTIModel] is created.' in log
    assert log.count('Validation demo_heldout') == 3  # iters 2 and 4, and after training
    # Validation images are saved during training, one per frame of the held-out clip, per validation.
    assert len(list((exp / 'visualization' / 'demo_heldout' / 'chelsea').glob('*_4.png'))) == 4
    ckpt = torch.load(exp / 'models' / 'net_g_4.pth', map_location='cpu')
    assert set(ckpt) == {'params', 'params_ema'}
    assert any(not torch.equal(ckpt['params'][k], ckpt['params_ema'][k]) for k in ckpt['params'])

    # Resume with --auto_resume, run as a file (python lrti_plugin/train.py), two more iterations.
    opt['train']['total_iter'] = 6
    dump_options(opt, yml)
    proc = subprocess.run([sys.executable, str(REPO / 'lrti_plugin' / 'train.py'), '-opt', yml, '--auto_resume'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    _check(proc)
    log = _train_log(tmp_path, name)
    assert 'Resuming training from epoch: 0, iter: 4.' in log
    state = torch.load(exp / 'training_states' / '6.state', map_location='cpu', weights_only=False)
    assert state['iter'] == 6
    before = torch.load(exp / 'models' / 'net_g_4.pth', map_location='cpu')['params']
    after = torch.load(exp / 'models' / 'net_g_6.pth', map_location='cpu')['params']
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # Test runner on the trained weights: SR frames saved, metrics logged.
    from lrti_plugin.utils.options import apply_overrides, load_options

    test_opt = point_at(load_options(str(REPO / 'options' / 'test_demo.yml')), tiny_data)
    apply_overrides(test_opt, {'network_g.num_feat': 8, 'network_g.num_block': 1, 'network_g.spynet_path': None,
                               'path.pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth')})
    test_yml = dump_options(test_opt, str(tmp_path / 'test.yml'))
    _check(run_module('lrti_plugin.test', ['-opt', test_yml], tmp_path))
    out = tmp_path / 'results' / test_opt['name'] / 'visualization' / 'demo_heldout' / 'chelsea'
    assert sorted(p.name for p in out.glob('*.png')) == [f'{i:08d}_{test_opt["name"]}.png' for i in range(4)]
    test_log = next((tmp_path / 'results' / test_opt['name']).glob('test_*.log')).read_text()
    assert '# psnr:' in test_log and '# ssim:' in test_log


def test_lrti_strategy_trains_validates_saves_and_resumes(tiny_data, tmp_path):
    """The real runner with ``train.lrti`` on: long pass + cached windows, validation, checkpoints, resume;
    in bfloat16 mixed precision (the other LRTI runs are float32)."""
    name = 'e2e_lrti'
    opt = to_lrti(tiny_options(tiny_data, name, {'train.scheduler.periods': [6], 'train.use_amp': True,
                                                 'train.amp_dtype': 'bfloat16'}), mode='sequential')
    yml = dump_options(opt, str(tmp_path / 'train.yml'))
    _check(run_module('lrti_plugin.train', ['-opt', yml], tmp_path))
    log = _train_log(tmp_path, name)
    assert 'Dataset [LRTILongClipDataset]' in log
    assert 'Mixed precision: autocast to torch.bfloat16 on cpu.' in log
    assert 'cache_long_mib' in log and 'long_pass_share' in log
    assert log.count('Validation demo_heldout') == 3
    opt['train']['total_iter'] = 6
    dump_options(opt, yml)
    _check(run_module('lrti_plugin.train', ['-opt', yml, '--auto_resume'], tmp_path))
    assert 'Resuming training from epoch: 0, iter: 4.' in _train_log(tmp_path, name)
    assert (_experiment(tmp_path, name) / 'models' / 'net_g_6.pth').is_file()


@pytest.fixture(scope='module')
def demo_size_data(tmp_path_factory) -> Path:
    """Demo clips big enough for BasicVSR++ (GT 256x256, LR 64x64): 2 training clips of 8 frames, 1 held out."""
    return make_demo_lmdbs(tmp_path_factory.mktemp('demo_size_data'), ('astronaut', 'coffee'), 8, 3, 256)


@pytest.mark.parametrize('options_file', ['train_lrti_tiny.yml', 'train_lrti_basicvsrpp_tiny.yml'])
def test_shipped_tiny_lrti_options_train(demo_size_data, tmp_path, options_file):
    """The shipped tiny LRTI recipes run as written (network, strategy, loss), shortened to 2 iterations and
    pointed at small demo LMDBs (their clips have 8 frames: L = 6, T = 3)."""
    from lrti_plugin.utils.options import apply_overrides, load_options

    opt = point_at(load_options(str(REPO / 'options' / options_file)), demo_size_data)
    name = f'e2e_{options_file[:-4]}'
    apply_overrides(opt, {'name': name, 'datasets.train.long_frames': 6, 'datasets.train.clip_frames': 3,
                          'datasets.train.num_worker_per_gpu': 0, 'train.total_iter': 2,
                          'train.scheduler.periods': [2], 'val.val_freq': 2, 'logger.print_freq': 1,
                          'logger.save_checkpoint_freq': 2})
    yml = dump_options(opt, str(tmp_path / 'train.yml'))
    _check(run_module('lrti_plugin.train', ['-opt', yml], tmp_path))
    log = _train_log(tmp_path, name)
    assert f"Network [{opt['network_g']['type']}] is created." in log
    assert 'LRTI strategy: LRTIOptions(long_frames=6, clip_frames=3, num_clips=2' in log
    assert 'cache_long_mib' in log and 'Validation demo_heldout' in log
    assert (_experiment(tmp_path, name) / 'models' / 'net_g_2.pth').is_file()


def test_kill_then_auto_resume(tiny_data, tmp_path):
    """A run killed mid-training resumes from its last complete state with --auto_resume."""
    name = 'e2e_kill'
    opt = tiny_options(tiny_data, name, {'train.total_iter': 1000, 'train.scheduler.periods': [1000],
                                         'val.val_freq': 100000, 'logger.save_checkpoint_freq': 1})
    yml = dump_options(opt, str(tmp_path / 'train.yml'))
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    proc = subprocess.Popen([sys.executable, '-m', 'lrti_plugin.train', '-opt', yml], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    states = _experiment(tmp_path, name) / 'training_states'
    deadline = time.time() + 300
    while time.time() < deadline and len(list(states.glob('*.state'))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.stem) for p in states.glob('*.state'))
    assert len(saved) >= 3, 'training did not save states in time'

    opt['train']['total_iter'] = saved[-1] + 2
    dump_options(opt, yml)
    _check(run_module('lrti_plugin.train', ['-opt', yml, '--auto_resume'], tmp_path))
    log = _train_log(tmp_path, name)
    assert f'Resuming training from epoch: 0, iter: {saved[-1]}.' in log
    assert (states / f'{saved[-1] + 2}.state').is_file()


def test_basicsr_own_train_py_trains_and_resumes_on_cpu(tiny_data, tmp_path):
    """The literal command: ``python basicsr/train.py -opt FILE`` runs BasicSR's own file, with nothing imported
    beforehand and no PYTHONPATH: the start-up hook (lrti_plugin_startup.pth) lets ``import basicsr`` succeed, the
    options' ``plugin:`` tag imports the plugin, and ``--auto_resume`` resumes on a CPU.

    BasicSR's runner writes ``experiments/`` next to its ``basicsr/`` folder, so its file is copied into a
    BasicSR-checkout-like folder here (as users run it from a BasicSR clone).
    """
    import basicsr

    import lrti_plugin_startup

    assert os.path.isfile(lrti_plugin_startup.pth_path()), (
        'the start-up hook is not installed in this environment: run `make venv` or '
        '`python -m lrti_plugin_startup install`')
    checkout = tmp_path / 'BasicSR'
    (checkout / 'basicsr').mkdir(parents=True)
    script = checkout / 'basicsr' / 'train.py'
    script.write_bytes((Path(basicsr.__file__).parent / 'train.py').read_bytes())
    name = 'e2e_basicsr_runner'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}

    def run(total_iter, *args):
        opt = tiny_options(tiny_data, name, {'train.total_iter': total_iter, 'train.scheduler.periods': [4],
                                             'val.val_freq': 2, 'logger.save_checkpoint_freq': 2})
        yml = dump_options(opt, str(tmp_path / 'train.yml'))
        return subprocess.run([sys.executable, str(script), '-opt', yml, *args], cwd=checkout, capture_output=True,
                              text=True, timeout=600, env=env)

    _check(run(2))
    _check(run(4, '--auto_resume'))
    log = _train_log(checkout, name)
    assert 'Model [LRTIModel] is created.' in log and 'Network [LRTIBasicVSR] is created.' in log
    assert 'Resuming training from epoch: 0, iter: 2.' in log
    models = _experiment(checkout, name) / 'models'
    assert (models / 'net_g_4.pth').is_file() and (models / 'net_g_latest.pth').is_file()


def _checkpoint(tmp_path: Path, kind: str) -> str:
    """A checkpoint of another width (16 channels; the tiny options have 8), or a truncated one."""
    from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR

    path = tmp_path / f'{kind}.pth'
    torch.save({'params': LRTIBasicVSR(16 if kind == 'wide' else 8, 1).state_dict()}, path)
    if kind == 'truncated':
        path.write_bytes(path.read_bytes()[:2000])
    return str(path)


@pytest.mark.parametrize('override, culprit', [
    ({'network_g.num_fet': 8}, 'network_g.num_fet: unknown key; did you mean num_feat?'),
    # a typo is found before any dataset is built: here the data is missing too, and the typo is what is reported
    ({'train.use_ampp': True, 'datasets.train.meta_info_file': '/nonexistent/meta.txt'},
     'train.use_ampp: unknown key; did you mean use_amp?'),
    ({'network_g.spynet_path': '/nonexistent/spynet.pth'}, '/nonexistent/spynet.pth'),
    ({'datasets.train.clip_frames': 50}, 'clip_frames=50'),
    ({'datasets.train.meta_info_file': '/nonexistent/meta.txt'}, '/nonexistent/meta.txt'),
    ({'datasets.train.gt_sise': 64}, 'datasets.train.gt_sise: unknown key; did you mean gt_size?'),
    ({'train.optim_g.type': 'Adagrad'}, 'Adagrad'),
    ({'lrti': True, 'datasets.train.clip_frames': 9}, 'clip_frames'),
    ({'lrti': True, 'train.lrti.modes': 'batch'}, 'train.lrti.modes: unknown key; did you mean mode?'),
    ({'lrti': True, 'network_g.type': 'BasicVSR'}, 'BasicVSR'),
    ({'path.pretrain_network_g': 'wide'}, 'wrong arch or width?'),
    ({'path.pretrain_network_g': 'truncated'}, 'truncated.pth: unreadable'),
    ({'launcher': 'slurm'}, '--launcher slurm: SLURM_PROCID is not set'),
])
def test_bad_options_exit_1_with_one_line_naming_the_culprit(tiny_data, tmp_path, override, culprit):
    name = 'e2e_bad'
    opt = tiny_options(tiny_data, name)
    override = dict(override)
    args = ['--launcher', override.pop('launcher')] if 'launcher' in override else []
    if override.pop('lrti', False):
        to_lrti(opt)
    for dotted, value in override.items():  # may add a key that does not exist yet (a typo)
        if dotted == 'path.pretrain_network_g':
            value = _checkpoint(tmp_path, value)
            culprit = culprit.replace('truncated.pth', value)
        *parents, last = dotted.split('.')
        node = opt
        for p in parents:
            node = node[p]
        node[last] = value
    yml = dump_options(opt, str(tmp_path / 'bad.yml'))
    proc = run_module('lrti_plugin.train', ['-opt', yml, *args], tmp_path)  # (no SLURM here)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('lrti_plugin.train: error: ') and culprit in last, proc.stderr[-2000:]
    models = _experiment(tmp_path, name) / 'models'
    assert not models.exists() or not list(models.iterdir()), 'no checkpoint may be written by a failed start'


@pytest.mark.parametrize('strategy', ['plain', 'lrti'])
def test_ddp_two_processes_on_cpu(tiny_data, tmp_path, strategy):
    """torchrun --nproc_per_node=2 ... --launcher pytorch trains with gloo on a CPU-only machine, plain or with
    ``train.lrti`` (frozen flow, so DDP must find unused parameters; EMA for the LRTI case)."""
    if torch.cuda.is_available():
        pytest.skip('this case checks the CPU (gloo) path')
    name = f'e2e_ddp_{strategy}'
    opt = tiny_options(tiny_data, name, {'train.total_iter': 2, 'val.val_freq': 2, 'train.fix_flow': 2})
    if strategy == 'lrti':
        opt = to_lrti(opt, mode='batch')
        opt['train']['ema_decay'] = 0.9
    yml = dump_options(opt, str(tmp_path / 'train.yml'))
    port = 29517 if strategy == 'plain' else 29518
    proc = run_module('torch.distributed.run', ['--nproc_per_node=2', f'--master_port={port}', '-m',
                                                'lrti_plugin.train', '-opt', yml, '--launcher', 'pytorch'], tmp_path)
    _check(proc)
    log = _train_log(tmp_path, name)
    assert 'World size (gpu number): 2' in log
    assert 'Validation demo_heldout' in log
    assert ('cache_long_mib' in log) == (strategy == 'lrti')
    ckpt = torch.load(_experiment(tmp_path, name) / 'models' / 'net_g_latest.pth', map_location='cpu')
    assert set(ckpt) == ({'params', 'params_ema'} if strategy == 'lrti' else {'params'})
