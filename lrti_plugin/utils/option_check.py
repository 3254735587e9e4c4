"""The one place that knows every option key of BasicSR's runner and of ``LRTIModel``, per section.

:func:`check_options` rejects an unknown key with a did-you-mean (``train.use_ampp: unknown key; did you
mean use_amp?``) and a value of the wrong type (``network_g.num_heads: expected a positive int, got 2.0``),
before any dataset or network is built: ``lrti_plugin.train``/``test`` call it on the options file
before BasicSR's pipeline starts, and ``LRTIModel`` calls it again (BasicSR's own runner has built the
datasets by then, but nothing has trained).

Where the keys come from:

* BasicSR's runner and models (``basicsr/train.py``, ``utils/options.py``, ``models/*``), listed below;
* ``network_g``: the registered arch's constructor arguments (values are checked by the arch itself,
  which :func:`check_options` builds nowhere: it only compares names);
* ``datasets.<phase>``: the dataset class's ``OPTION_KEYS`` where it has one (the plugin's datasets);
  BasicSR's own datasets are not checked;
* ``train.optim_g``, ``train.scheduler``, ``train.pixel_opt``/``perceptual_opt``, ``val.metrics.<name>``:
  the constructor or function signature of the ``type`` named (for metrics, the named arguments only:
  BasicSR's metrics take ``**kwargs`` and would swallow a typo).

Only ``model_type: LRTIModel`` gets its ``train``/``val`` sections checked; with another model only the
top level, ``path``, ``logger``, ``network_g`` and the datasets are.
"""
import inspect
from typing import Any, Iterable, Mapping, Optional

from lrti_plugin.utils.validate import (
    check_known_keys,
    did_you_mean,
    expect_bool,
    expect_choice,
    expect_int,
    expect_number,
    is_number,
)

TOP_KEYS = frozenset({
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'path', 'train', 'val',
    'logger', 'dist_params', 'find_unused_parameters', 'plugin',
    # added by BasicSR's parse_options at run time
    'dist', 'rank', 'world_size', 'auto_resume', 'is_train', 'root_path',
})
PATH_KEYS = frozenset({
    'pretrain_network_g', 'strict_load_g', 'param_key_g', 'resume_state',
    # added by BasicSR's parse_options at run time
    'experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root',
})
LOGGER_KEYS = frozenset({'print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'})
WANDB_KEYS = frozenset({'project', 'resume_id'})
DIST_PARAMS_KEYS = frozenset({'backend', 'port'})
# LRTIModel's (BasicSR's VideoRecurrentModel's, plus the plugin's)
TRAIN_KEYS = frozenset({
    'ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'fix_flow', 'flow_lr_mul', 'pixel_opt',
    'perceptual_opt', 'use_amp', 'amp_dtype', 'lrti', 'grad_clip_norm', 'skip_nonfinite', 'exact_resume',
})
VAL_KEYS = frozenset({'val_freq', 'save_img', 'flip_seq', 'center_frame_only', 'metrics', 'suffix', 'stream_chunk'})


def check_options(opt: Mapping, source: Optional[str] = None) -> None:
    """Check every key (and the types BasicSR reads) of a BasicSR options dict.

    Args:
        opt: The options, as read from YAML (BasicSR's run-time keys may be present).
        source: The options file, named at the start of the message when given.

    Raises:
        ValueError: ``[FILE: ]<dotted key>: <what is wrong>`` for the first problem found.
    """
    try:
        _check(opt)
    except ValueError as err:
        if source:
            raise ValueError(f'{source}: {err}') from None
        raise


def _check(opt: Mapping) -> None:
    if not isinstance(opt, Mapping):
        raise ValueError(f'expected a mapping of options at the top level, got {type(opt).__name__}')
    check_known_keys('options', opt, TOP_KEYS)
    for key in ('name', 'model_type', 'network_g'):
        if key not in opt:
            raise ValueError(f'{key}: required')
    if not isinstance(opt['name'], str):
        raise ValueError(f'name: expected a string, got {opt["name"]!r}')
    expect_int('scale', opt.get('scale', 4), minimum=1)
    num_gpu = opt.get('num_gpu', 'auto')
    if num_gpu != 'auto':
        expect_int('num_gpu', num_gpu, minimum=0)
    seed = opt.get('manual_seed')
    if seed is not None:
        expect_int('manual_seed', seed)
    _section(opt, 'path', PATH_KEYS, bools=('strict_load_g',))
    _section(opt, 'logger', LOGGER_KEYS, counts=('print_freq', 'save_checkpoint_freq'), bools=('use_tb_logger',))
    if isinstance(opt.get('logger'), Mapping) and opt['logger'].get('wandb') is not None:
        _section(opt['logger'], 'wandb', WANDB_KEYS, prefix='logger.')
    _section(opt, 'dist_params', DIST_PARAMS_KEYS)
    check_network(opt['network_g'], 'network_g')
    datasets = opt.get('datasets') or {}
    if not isinstance(datasets, Mapping):
        raise ValueError(f'datasets: expected a mapping of phases, got {type(datasets).__name__}')
    for phase, ds in datasets.items():
        _check_dataset(ds, f'datasets.{phase}')
    if opt['model_type'] != 'LRTIModel':
        return
    train = _section(opt, 'train', TRAIN_KEYS, counts=('total_iter',),
                     bools=('use_amp', 'skip_nonfinite', 'exact_resume'))
    if train:
        _check_train(train)
    val = _section(opt, 'val', VAL_KEYS, counts=('val_freq', 'stream_chunk'),
                   bools=('save_img', 'flip_seq', 'center_frame_only'))
    if val and val.get('metrics') is not None:
        _check_metrics(val['metrics'])


def check_network(net_opt: Any, section: str = 'network_g') -> None:
    """``type`` is a registered arch and every other key is one of its constructor's arguments."""
    from basicsr.utils.registry import ARCH_REGISTRY

    _check_typed_block(net_opt, section, ARCH_REGISTRY, 'arch', skip=(), strict_ints=True)


def _section(parent: Mapping, key: str, known: Iterable[str], counts=(), bools=(),
             prefix: str = '') -> Optional[Mapping]:
    """Check the mapping ``parent[key]`` (absent or null is fine): known keys, counts and bools."""
    block = parent.get(key)
    if block is None:
        return None
    name = prefix + key
    if not isinstance(block, Mapping):
        raise ValueError(f'{name}: expected a mapping, got {block!r}')
    check_known_keys(name, block, known)
    for k in counts:
        if k in block:
            _expect_count(f'{name}.{k}', block[k])
    for k in bools:
        if block.get(k) is not None:
            expect_bool(f'{name}.{k}', block[k])
    return block


def _expect_count(key: str, value: Any) -> None:
    """A positive whole number; BasicSR files often write them as floats (``!!float 5e3``)."""
    if not is_number(value) or value != int(value) or value < 1:
        raise ValueError(f'{key}: expected a positive whole number, got {value!r}')


def _check_train(train: Mapping) -> None:
    if train.get('ema_decay') is not None:
        expect_number('train.ema_decay', train['ema_decay'], 0, 1)
    if train.get('warmup_iter') is not None:
        value = train['warmup_iter']
        if not is_number(value) or value != int(value) or value < -1:
            raise ValueError(f'train.warmup_iter: expected -1 (none) or a whole number, got {value!r}')
    if train.get('fix_flow') not in (None, False):
        _expect_count('train.fix_flow', train['fix_flow'])
    if train.get('flow_lr_mul') is not None:
        expect_number('train.flow_lr_mul', train['flow_lr_mul'], 0)
    if train.get('amp_dtype') is not None:
        expect_choice('train.amp_dtype', train['amp_dtype'], ('auto', 'float16', 'bfloat16'))
    if 'optim_g' not in train:
        raise ValueError('train.optim_g: required')
    from lrti_plugin.models.lrti_model import OPTIMIZERS

    _check_typed_block(train['optim_g'], 'train.optim_g', OPTIMIZERS, 'optimizer', skip=('params',))
    if 'scheduler' in train:
        from basicsr.models import lr_scheduler

        schedulers = {'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
                      'MultiStepLR': lr_scheduler.MultiStepRestartLR,  # BasicSR's alias
                      'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
        _check_typed_block(train['scheduler'], 'train.scheduler', schedulers, 'scheduler',
                           skip=('optimizer', 'last_epoch'))
    from basicsr.utils.registry import LOSS_REGISTRY

    for key in ('pixel_opt', 'perceptual_opt'):
        if train.get(key) is not None:
            _check_typed_block(train[key], f'train.{key}', LOSS_REGISTRY, 'loss', skip=())


def _check_metrics(metrics: Any) -> None:
    from basicsr.utils.registry import METRIC_REGISTRY

    if not isinstance(metrics, Mapping):
        raise ValueError(f'val.metrics: expected a mapping of named metrics, got {metrics!r}')
    for name, metric in metrics.items():
        _check_typed_block(metric, f'val.metrics.{name}', METRIC_REGISTRY, 'metric', skip=('img', 'img2'),
                           extra=('better',), named_only=True)


def _check_dataset(ds: Any, section: str) -> None:
    from basicsr.utils.registry import DATASET_REGISTRY

    if not isinstance(ds, Mapping) or 'type' not in ds:
        raise ValueError(f'{section}: expected a mapping with a type')
    cls = _lookup(DATASET_REGISTRY, ds['type'], f'{section}.type', 'dataset')
    known = getattr(cls, 'OPTION_KEYS', None)
    if known is not None:
        check_known_keys(section, ds, known)


def _check_typed_block(block: Any, section: str, registry, what: str, skip: Iterable[str], extra=(),
                       named_only: bool = False, strict_ints: bool = False) -> None:
    """``block['type']`` names an entry of ``registry``; the other keys are its signature's arguments, of the
    kind of their defaults (``strict_ints``: an int default takes only ints, as archs' widths; else any number)."""
    if not isinstance(block, Mapping) or 'type' not in block:
        raise ValueError(f'{section}: expected a mapping with a type')
    target = _lookup(registry, block['type'], f'{section}.type', what)
    params = inspect.signature(target).parameters
    if not named_only and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # takes anything
    named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in skip]
    check_known_keys(section, {k: v for k, v in block.items() if k != 'type'}, [*named, *extra])
    required = [n for n in named if params[n].default is inspect.Parameter.empty and n not in block]
    if required:
        raise ValueError(f'{section}: {block["type"]} needs {", ".join(required)}')
    for key, value in block.items():
        if key in params:
            _check_like_default(f'{section}.{key}', value, params[key], strict_ints)


def _check_like_default(key: str, value: Any, param: inspect.Parameter, strict_ints: bool) -> None:
    """A value of the kind of the parameter's default (an int for an int, ...); the callee checks ranges."""
    default = param.default
    if default is inspect.Parameter.empty or value is None:
        return
    if isinstance(default, bool):
        expect_bool(key, value)
    elif isinstance(default, int) and strict_ints:
        expect_int(key, value)
    elif isinstance(default, (int, float)):
        expect_number(key, value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f'{key}: expected a string, got {value!r}')
    elif default is None and _annotation_is(param, str) and not isinstance(value, str):
        raise ValueError(f'{key}: expected a string or null, got {value!r}')


def _annotation_is(param: inspect.Parameter, kind: type) -> bool:
    """Whether the parameter is annotated ``kind`` or ``Optional[kind]``."""
    ann = param.annotation
    return ann is kind or getattr(ann, '__args__', None) in ((kind, type(None)), (type(None), kind))


def _lookup(registry, name: Any, key: str, what: str):
    """The entry ``name`` of a BasicSR registry (or a dict), or a one-line error with a did-you-mean."""
    names = list(registry) if isinstance(registry, Mapping) else [n for n, _ in registry]
    if not isinstance(name, str) or name not in names:
        raise ValueError(f'{key}: unknown {what} {name!r}{did_you_mean(name, names)}')
    return registry[name] if isinstance(registry, Mapping) else registry.get(name)
