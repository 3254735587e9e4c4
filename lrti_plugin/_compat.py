"""The one place where basicsr 1.4.2 is made to work on current torch and on CPU-only machines.

Two kinds of fixes live here:

* :func:`install_functional_tensor_shim` runs at import time of the package (basicsr cannot be
  imported without it on torchvision >= 0.17).
* :func:`patch_basicsr_runners` runs at import time of the package too (BasicSR's own runner imports
  the plugin while it reads the options). It replaces two module-level functions of BasicSR's runner
  whose bodies hard-code CUDA, and its two prefetcher classes, so that a resumed run continues its
  interrupted epoch's data instead of restarting it (:mod:`lrti_plugin.utils.resume`).

Model-level defects (validation metrics on a hard-coded CUDA device, DDP ``device_ids``) are fixed in
:class:`lrti_plugin.models.lrti_model.LRTIModel`, which overrides the offending hooks.
"""
import os
import sys


def install_functional_tensor_shim():
    """Make ``torchvision.transforms.functional_tensor`` importable if torchvision no longer has it.

    Answers ``basicsr/data/degradations.py``: ``from torchvision.transforms.functional_tensor import
    rgb_to_grayscale`` (the module was removed in torchvision 0.17). The finder lives in the top-level
    module :mod:`lrti_plugin_startup`, whose ``.pth`` start-up hook also installs it in processes that
    import BasicSR before the plugin (BasicSR's own ``basicsr/train.py``).
    """
    import lrti_plugin_startup

    lrti_plugin_startup.install()


def _load_resume_state_any_device(opt):
    """Device-aware copy of ``basicsr.train.load_resume_state``.

    Answers ``basicsr/train.py``: its ``torch.load`` maps every storage onto the current CUDA device,
    which crashes on a machine without CUDA. The state is loaded onto
    the CPU; optimizers move their tensors to the parameters' device in ``load_state_dict``.
    """
    from basicsr.utils import check_resume, scandir

    resume_state_path = None
    if opt['auto_resume']:
        state_path = os.path.join('experiments', opt['name'], 'training_states')
        state_path = os.path.join(opt.get('root_path', ''), state_path)
        if os.path.isdir(state_path):
            states = [float(v.split('.state')[0]) for v in scandir(state_path, suffix='state', recursive=False)]
            if states:
                resume_state_path = os.path.join(state_path, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    from lrti_plugin.utils.checkpoint import read_checkpoint

    resume_state = read_checkpoint(resume_state_path, 'path.resume_state', weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state


def _load_resume_state_exact(opt):
    """``load_resume_state`` that also tells the prefetchers which epoch and batch the run resumes at."""
    from lrti_plugin.utils import resume

    resume_state = _load_resume_state_any_device(opt)
    resume.note_resume(opt, resume_state)
    return resume_state


def _init_dist_any_device(launcher, backend=None, **kwargs):
    """Device-aware ``basicsr.utils.dist_util.init_dist`` for ``--launcher pytorch``.

    Answers ``basicsr/utils/dist_util.py``: ``_init_dist_pytorch`` hard-codes the nccl backend and
    calls ``torch.cuda.set_device(rank % torch.cuda.device_count())``, a ZeroDivisionError on a
    CPU. Here: nccl and one GPU per local rank where CUDA exists, gloo on CPU.
    """
    import torch
    import torch.distributed as dist

    if launcher == 'slurm' and 'SLURM_PROCID' not in os.environ:
        raise ValueError('--launcher slurm: SLURM_PROCID is not set (not inside a SLURM job step); start the '
                         'job with srun, or use torchrun ... --launcher pytorch')
    if launcher != 'pytorch':
        from basicsr.utils.dist_util import init_dist
        return init_dist(launcher, backend=backend or 'nccl', **kwargs)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        backend = backend or 'nccl'
    else:
        backend = backend or 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def patch_basicsr_runners():
    """Make BasicSR's ``train_pipeline``/``test_pipeline`` work on CPU (resume, DDP). Idempotent.

    Applied when the plugin is imported, which BasicSR's own ``python basicsr/train.py -opt FILE`` does
    while it reads the options (their ``plugin:`` tag), before it resumes or starts a process group.
    There the runner is the ``__main__`` module, not ``basicsr.train``: its ``load_resume_state`` is
    replaced too.
    """
    import basicsr.train
    import basicsr.utils.options

    from lrti_plugin.utils.resume import ExactResumeCPUPrefetcher, ExactResumeCUDAPrefetcher

    runners = [basicsr.train]
    main = sys.modules.get('__main__')
    if _is_basicsr_train_script(getattr(main, '__file__', None)) and hasattr(main, 'load_resume_state'):
        runners.append(main)
    for runner in runners:
        runner.load_resume_state = _load_resume_state_exact
        runner.CPUPrefetcher = ExactResumeCPUPrefetcher
        runner.CUDAPrefetcher = ExactResumeCUDAPrefetcher
    basicsr.utils.options.init_dist = _init_dist_any_device


def _is_basicsr_train_script(path) -> bool:
    """Whether ``path`` is BasicSR's ``basicsr/train.py`` (installed or in a BasicSR checkout)."""
    if not path:
        return False
    path = os.path.abspath(path)
    return os.path.basename(path) == 'train.py' and os.path.basename(os.path.dirname(path)) == 'basicsr'
