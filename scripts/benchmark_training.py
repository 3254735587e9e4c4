"""Training cost of the LRTI strategy against plain clip training: time per step and peak memory.

For one arch and LR crop, five configurations run the real ``LRTIModel.optimize_parameters`` on
synthetic data, each in its own child process (a fresh memory high-water mark):

* ``plain_T``: plain training on N clips of T frames (batch N): the same N*T supervised frames per step
  as LRTI, each with at most T frames of context.
* ``plain_L``: plain training on one clip of L frames (batch 1).
* ``lrti_batch``: LRTI (L, T, N), ``mode: batch``: long pass without gradient, N windows in one step.
* ``lrti_seq``: LRTI (L, T, N), ``mode: sequential``: the N windows spent on N optimiser steps.
* ``lrti_n1``: LRTI (L, T, 1): one window per long pass.

Data: random LR frames (B, L, 3, h, w) from a fixed seed; the GT is their bicubic x4 upsampling plus
Gaussian noise (sigma 0.02). The cost of these networks does not depend on the content. LRTI windows
start at ``round(n * (L - T) / (N - 1))`` (the long-clip dataset's ``even`` sampling; ``(L - T) // 2``
for N = 1), and ``plain_T`` trains exactly these windows. Every configuration trains every parameter
(SpyNet included, randomly initialised; ``--fix-flow`` freezes SpyNet as the fine-tuning recipes do) with Adam
from the same initial weights.

Timing: ``--warmup`` untimed iterations, then ``--iters`` timed ones; each timed iteration is
``optimize_parameters`` alone (the batch is fed before the clock starts), with the device synchronised
on both sides; the median is reported. "Per supervised frame" divides by the frames that receive a loss
in one iteration (N*T, L, N*T, N*T, T). For LRTI, ``long_pass_share`` (long pass time / iteration time)
and the cache sizes come from the model's ``log_dict`` (``train.lrti.log_cache``), averaged over the
timed iterations.

Peak memory:

* CUDA (any accelerator): ``torch.accelerator.max_memory_allocated`` after
  ``reset_peak_memory_stats`` just before the first timed iteration: every tensor alive at the peak,
  weights, Adam states and the batch included.
* CPU: the growth of the child's resident set during the timed iterations: ``ru_maxrss`` of
  ``getrusage(RUSAGE_SELF)`` at the end minus the RSS read from ``/proc/self/statm`` just before the
  first timed iteration. So that this difference covers the timed iterations only, the child first
  frees what it can (``gc.collect``, glibc's ``malloc_trim(0)``: memory freed by the warm-up would
  otherwise stay resident and be reused unseen) and resets the kernel's high-water mark (writing ``5``
  to ``/proc/self/clear_refs``; ``hwm_reset`` in the JSON says whether it worked). Linux also carries
  the parent's high-water mark into a child's ``ru_maxrss`` at ``exec``; the parent process of this
  script therefore never imports torch and stays far below a child's RSS. Weights and (after a
  warm-up) Adam states are in the baseline, so the CPU number is activations, gradients and
  temporaries: it is not comparable with the CUDA number, only with the other rows of its run. It
  is what the process holds, allocator included: glibc keeps freed tensors' memory for reuse, so a
  pattern of allocations of changing sizes (a long pass of batch 1, then windows of batch N) can
  leave more resident than the live tensors ever reach. ``MALLOC_MMAP_THRESHOLD_=131072`` in the
  environment (inherited by the children) makes every large tensor an ``mmap`` returned at free, so
  the RSS follows the live tensors more closely (closer to the CUDA number), at the cost of page
  faults that slow every configuration. Use ``--warmup`` >= 1 on a CPU: the first iteration also
  loads libraries and sets up kernels (tens of MiB in the first measured growth).

CPU time and the allocator: glibc serves every allocation above its mmap threshold (32 MiB at most)
with fresh pages, so the large activations of a batch of N clips are page-faulted (zeroed) on every
iteration, while the smaller ones of batch 1 are reused from the heap. On a CPU this makes a
batch-N step slower than N batch-1 steps of the same frames; ``minor_faults_per_iter`` in the JSON
shows it. A GPU's caching allocator has no such cost.

Threads: on a shared machine, ``--threads 1`` avoids the stalls of OpenMP threads competing with other
processes for the same cores (they made single iterations up to 10x slower on a loaded 2-core machine).

Targets (printed as PASS/FAIL, never asserted): LRTI (batch) peak memory within 1.2x of ``plain_T``;
with N = 1 or in sequential mode at L = 4T, below 40 % of ``plain_L``; LRTI (batch) time per
supervised frame within 1.5x of ``plain_T``.

Example (docs/benchmarks.md, "Training cost"; about 4 minutes on 2 CPU cores)::

    .venv/bin/python scripts/benchmark_training.py --arch LRTIBasicVSR --size tiny --lr-size 64 --clip 8 \\
        --long 32 --num-clips 4 --iters 3 --warmup 1 --threads 1 --json results/benchmark_training.json
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

# Nothing here imports torch at module level: the parent must keep a small RSS (see the docstring);
# the child imports torch and the plugin in ``run_child``.

CONFIGS = ('plain_T', 'plain_L', 'lrti_batch', 'lrti_seq', 'lrti_n1')
LABELS = {
    'plain_T': 'plain, N clips of T (batch N)',
    'plain_L': 'plain, 1 clip of L',
    'lrti_batch': 'LRTI (L, T, N), batch',
    'lrti_seq': 'LRTI (L, T, N), sequential',
    'lrti_n1': 'LRTI (L, T, 1)',
}
# arch -> size preset -> constructor keywords (spynet_path is always None: random SpyNet, same cost).
ARCHS: Dict[str, Dict[str, dict]] = {
    'LRTIBasicVSR': {'tiny': dict(num_feat=16, num_block=2), 'paper': dict(num_feat=64, num_block=30)},
    'LRTIBasicVSRPP': {'tiny': dict(mid_channels=16, num_blocks=1), 'paper': dict(mid_channels=64, num_blocks=7)},
    'LRTIVSR': {
        'tiny': dict(num_feat=16, num_heads=2, window_size=4, num_groups=1, depth=2, mlp_ratio=2, mid_channels=16,
                     num_extract_block=1, drop_path_rate=0.0),
        'paper': dict(),  # the defaults: C 120, 6 heads, 4 groups x 6 RITBs, window 8, drop path 0.1
    },
}
SCALE = 4
GT_NOISE = 0.02
MEM_LIMIT_BATCH = 1.2  # lrti_batch / plain_T
MEM_LIMIT_LONG = 0.4  # lrti_n1 and lrti_seq / plain_L (defined at L = 4T)
TIME_LIMIT = 1.5  # lrti_batch / plain_T, seconds per supervised frame
_MIB = float(2**20)


# ------------------------------------------------------------------------------------------ geometry
def window_starts(long_frames: int, clip_frames: int, num_clips: int) -> List[int]:
    """Starts of the N windows: ``round(n * (L - T) / (N - 1))``, halves up; ``(L - T) // 2`` for N = 1."""
    last = long_frames - clip_frames
    if num_clips == 1:
        return [last // 2]
    den = num_clips - 1
    return [(2 * n * last + den) // (2 * den) for n in range(num_clips)]


def config_geometry(config: str, args) -> dict:
    """What one iteration of ``config`` trains: its batch (``windows``: the N windows as N clips; ``long``:
    the long clip; ``lrti``: the long-clip batch), the LRTI block (or None), N, supervised frames, steps."""
    big_l, t, n = args.long, args.clip, args.num_clips
    return {
        'plain_T': {'batch': 'windows', 'lrti': None, 'num_clips': n, 'supervised': n * t, 'steps': 1},
        'plain_L': {'batch': 'long', 'lrti': None, 'num_clips': n, 'supervised': big_l, 'steps': 1},
        'lrti_batch': {'batch': 'lrti', 'lrti': {'mode': 'batch'}, 'num_clips': n, 'supervised': n * t, 'steps': 1},
        'lrti_seq': {'batch': 'lrti', 'lrti': {'mode': 'sequential'}, 'num_clips': n, 'supervised': n * t,
                     'steps': n},
        'lrti_n1': {'batch': 'lrti', 'lrti': {'mode': 'batch'}, 'num_clips': 1, 'supervised': t, 'steps': 1},
    }[config]


# ---------------------------------------------------------------------------------------------- child
def model_options(args, geometry: dict, accel: bool) -> dict:
    """A BasicSR option dict for ``LRTIModel`` (training, no datasets read, no files written)."""
    network = {'type': args.arch, 'spynet_path': None, **ARCHS[args.arch][args.size]}
    train = {
        'ema_decay': 0,
        'optim_g': {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
        'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [10**6], 'restart_weights': [1],
                      'eta_min': 1e-7},
        'total_iter': 10**6, 'warmup_iter': -1, 'fix_flow': 10**6 if args.fix_flow else None, 'flow_lr_mul': 1,
        'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean'},
    }
    if args.amp != 'none':
        train.update(use_amp=True, amp_dtype=args.amp)
    dataset = {'name': 'synthetic', 'type': 'LRTIRecurrentDataset'}
    if geometry['lrti'] is not None:
        train['lrti'] = {**geometry['lrti'], 'init': 'cached', 'log_cache': True}
        dataset.update(type='LRTILongClipDataset', long_frames=args.long, clip_frames=args.clip,
                       num_clips=geometry['num_clips'])
    return {
        'name': 'benchmark_training', 'model_type': 'LRTIModel', 'scale': SCALE, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1, 'num_gpu': 1 if accel else 0,
        'datasets': {'train': dataset}, 'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}, 'train': train,
    }


def synthetic_batch(args, geometry: dict) -> dict:
    """The training batch of one configuration, on the CPU (``feed_data`` moves it)."""
    import torch
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(0)
    big_l, t, h = args.long, args.clip, args.lr_size
    lq = torch.rand(1, big_l, 3, h, h, generator=g)  # (1, L, 3, h, w)
    gt = F.interpolate(lq[0], scale_factor=SCALE, mode='bicubic', align_corners=False)  # (L, 3, sH, sW)
    gt = (gt + GT_NOISE * torch.randn(gt.shape, generator=g)).clamp(0, 1).unsqueeze(0)  # (1, L, 3, sH, sW)
    if geometry['batch'] == 'long':
        return {'lq': lq, 'gt': gt}
    starts = window_starts(big_l, t, geometry['num_clips'])
    windows = torch.stack([gt[0, s:s + t] for s in starts])  # (N, T, 3, sH, sW)
    if geometry['batch'] == 'lrti':
        return {'lq': lq, 'gt': windows.unsqueeze(0), 'starts': torch.tensor([starts], dtype=torch.int64)}
    clips = torch.stack([lq[0, s:s + t] for s in starts])  # (N, T, 3, h, w)
    return {'lq': clips, 'gt': windows}


def _rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / _MIB


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS record of this process (Linux >= 4.0); False where not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Return glibc's free heap pages to the system (no-op with another C library)."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_child(args, config: str) -> dict:
    """Build the model of ``config``, train ``warmup + iters`` iterations, measure; one result dict."""
    import gc  # noqa: I001  (lrti_plugin must be imported before basicsr: torchvision shim)
    import logging
    import resource

    import torch

    import lrti_plugin  # noqa: F401  (torchvision shim before basicsr, registers the archs)
    from basicsr.utils import get_root_logger
    from lrti_plugin.models.lrti_model import LRTIModel

    get_root_logger(log_level=logging.WARNING)  # BasicSR prints the whole network at INFO
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    accel = device.type != 'cpu'
    if accel and device.index is not None:
        torch.accelerator.set_device_index(device.index)  # BasicSR's model uses the current device
    geometry = config_geometry(config, args)
    torch.manual_seed(0)
    model = LRTIModel(model_options(args, geometry, accel))
    if model.device.type != device.type:
        raise RuntimeError(f'model built on {model.device}, expected {device}')
    batch = synthetic_batch(args, geometry)

    def sync():
        if accel:
            torch.accelerator.synchronize(device)

    def iteration(i: int) -> float:
        model.feed_data(batch)
        sync()
        start = time.perf_counter()
        model.optimize_parameters(i + 1)
        sync()
        return time.perf_counter() - start

    for i in range(args.warmup):
        iteration(i)
    gc.collect()
    if accel:
        torch.accelerator.reset_peak_memory_stats(device)
        before = torch.accelerator.memory_allocated(device) / _MIB
        hwm_reset = True
    else:
        _malloc_trim()
        before = _rss_mib()
        hwm_reset = _reset_high_water_mark()
    times, logs = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(args.warmup, args.warmup + args.iters):
        times.append(iteration(i))
        logs.append(dict(model.log_dict))
    if accel:
        peak = torch.accelerator.max_memory_allocated(device) / _MIB
        mem_method = 'max_memory_allocated'
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before  # ru_maxrss: KiB on Linux
        mem_method = 'ru_maxrss - rss_before'
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.iters
    sec = statistics.median(times)
    result = {
        'config': config, 'label': LABELS[config], 'num_clips': geometry['num_clips'],
        'supervised_frames': geometry['supervised'], 'optimizer_steps': geometry['steps'],
        'lq_shape': list(batch['lq'].shape), 'sec_per_iter': sec, 'sec_per_frame': sec / geometry['supervised'],
        'iter_times': times, 'minor_faults_per_iter': faults,
        'peak_mib': peak, 'mem_before_mib': before, 'mem_method': mem_method, 'hwm_reset': hwm_reset,
        'loss': logs[-1].get('l_pix'),
        'torch': torch.__version__, 'threads': torch.get_num_threads(),
        'device_name': torch.cuda.get_device_name(device) if accel else platform.processor() or platform.machine(),
        'params_m': sum(p.numel() for p in model.net_g.parameters()) / 1e6,
        'trained_params_m': sum(p.numel() for p in model.net_g.parameters() if p.requires_grad) / 1e6,
        'autocast_dtype': str(model.amp_dtype).replace('torch.', '') if model.amp_dtype is not None else 'none',
    }
    if geometry['lrti'] is not None:
        for key in ('long_pass_share', 'cache_long_mib', 'cache_windows_mib'):
            result[key] = statistics.fmean(log[key] for log in logs)
    return result


# --------------------------------------------------------------------------------------------- parent
def child_argv(args, config: str) -> List[str]:
    return [sys.executable, os.path.abspath(__file__), '--arch', args.arch, '--size', args.size,
            '--lr-size', str(args.lr_size), '--long', str(args.long), '--clip', str(args.clip),
            '--num-clips', str(args.num_clips), '--iters', str(args.iters), '--warmup', str(args.warmup),
            '--device', args.device, '--threads', str(args.threads), '--amp', args.amp, '--child', config] + (
                ['--fix-flow'] if args.fix_flow else [])


def measure(args, config: str) -> dict:
    """Run ``config`` in a child process; its last stdout line is the result (JSON)."""
    proc = subprocess.run(child_argv(args, config), capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'{config}: child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1])


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den > 0 and math.isfinite(num) and math.isfinite(den) else None


def compare(results: Dict[str, dict], args) -> dict:
    """Ratios of memory and time per supervised frame, and the target verdicts."""
    pairs = {'lrti_batch/plain_T': ('lrti_batch', 'plain_T'), 'lrti_seq/plain_T': ('lrti_seq', 'plain_T'),
             'lrti_n1/plain_L': ('lrti_n1', 'plain_L'), 'lrti_seq/plain_L': ('lrti_seq', 'plain_L'),
             'plain_L/plain_T': ('plain_L', 'plain_T')}
    ratios = {
        name: {'peak_mib': _ratio(results[a]['peak_mib'], results[b]['peak_mib']),
               'sec_per_frame': _ratio(results[a]['sec_per_frame'], results[b]['sec_per_frame'])}
        for name, (a, b) in pairs.items()
    }
    note = '' if args.long == 4 * args.clip else f' (stated at L = 4T; here L = {args.long}, T = {args.clip})'
    mem, sec = 'peak_mib', 'sec_per_frame'
    targets = [  # name, measured ratio, limit, limit inclusive, note
        ('LRTI batch peak memory <= 1.2 x plain-T', ratios['lrti_batch/plain_T'][mem], MEM_LIMIT_BATCH, True, ''),
        ('LRTI N=1 peak memory < 0.4 x plain-L', ratios['lrti_n1/plain_L'][mem], MEM_LIMIT_LONG, False, note),
        ('LRTI sequential peak memory < 0.4 x plain-L', ratios['lrti_seq/plain_L'][mem], MEM_LIMIT_LONG, False, note),
        ('LRTI batch s/supervised frame <= 1.5 x plain-T', ratios['lrti_batch/plain_T'][sec], TIME_LIMIT, True, ''),
    ]
    verdicts = []
    for name, value, limit, inclusive, why in targets:
        if value is None:
            verdict = 'N/A'
        else:
            verdict = 'PASS' if (value <= limit if inclusive else value < limit) else 'FAIL'
        verdicts.append({'target': name, 'value': value, 'limit': limit, 'verdict': verdict, 'note': why})
    return {'ratios': ratios, 'targets': verdicts}


def _fmt(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def markdown(report: dict) -> str:
    """The results, ratios and targets as markdown tables."""
    cfg = report['config']
    mem = 'peak MiB (CPU: RSS growth)' if cfg['device'].startswith('cpu') else 'peak MiB (max allocated)'
    head = ['Config', 'batch x frames with grad', 'supervised frames / iter', 's / iter', 's / supervised frame', mem,
            'long pass share', 'cache MiB (long / windows)']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    big_l, t, n = cfg['long'], cfg['clip'], cfg['num_clips']
    long_pass = f' (+ 1 x {big_l} no grad)'
    shapes = {'plain_T': f'{n} x {t}', 'plain_L': f'1 x {big_l}', 'lrti_batch': f'{n} x {t}{long_pass}',
              'lrti_seq': f'{n} steps of 1 x {t}{long_pass}', 'lrti_n1': f'1 x {t}{long_pass}'}
    for name in CONFIGS:
        r = report['results'][name]
        cache = (f'{r["cache_long_mib"]:.2f} / {r["cache_windows_mib"]:.2f}' if 'cache_long_mib' in r else '-')
        share = f'{100 * r["long_pass_share"]:.0f} %' if 'long_pass_share' in r else '-'
        lines.append(f'| {r["label"]} | {shapes[name]} | {r["supervised_frames"]} | {r["sec_per_iter"]:.3f} | '
                     f'{r["sec_per_frame"]:.4f} | {r["peak_mib"]:.1f} | {share} | {cache} |')
    lines += ['', '| Ratio | peak memory | s / supervised frame |', '|---|---|---|']
    for name, value in report['ratios'].items():
        lines.append(f'| {name} | {_fmt(value["peak_mib"], ".2f")} | {_fmt(value["sec_per_frame"], ".2f")} |')
    lines += ['', '| Target | measured | limit | verdict |', '|---|---|---|---|']
    for v in report['targets']:
        lines.append(f'| {v["target"]} | {_fmt(v["value"], ".2f")} | {v["limit"]} | {v["verdict"]}{v["note"]} |')
    return '\n'.join(lines)


def run(args) -> dict:
    config = {'arch': args.arch, 'size': args.size, 'network': ARCHS[args.arch][args.size], 'lr_size': args.lr_size,
              'long': args.long, 'clip': args.clip, 'num_clips': args.num_clips, 'iters': args.iters,
              'warmup': args.warmup, 'device': args.device, 'threads': args.threads, 'amp': args.amp,
              'fix_flow': args.fix_flow,
              'starts': window_starts(args.long, args.clip, args.num_clips)}
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = {}
    for name in CONFIGS:
        print(f'{name}: {LABELS[name]} ...', flush=True)
        results[name] = measure(args, name)
        r = results[name]
        print(f'  {r["sec_per_iter"]:.3f} s/iter, {r["peak_mib"]:.1f} MiB peak', flush=True)
    first = results[CONFIGS[0]]
    machine = {'platform': platform.platform(), 'processor': platform.processor(), 'cpu_count': os.cpu_count(),
               'torch': first['torch'], 'torch_threads': first['threads'], 'device_name': first['device_name'],
               'load_avg_before': load_before, 'load_avg_after': os.getloadavg(),
               'wall_s': time.perf_counter() - start, 'python': platform.python_version()}
    report = {'config': config, 'machine': machine, 'results': results}
    report.update(compare(results, args))
    return report


# ------------------------------------------------------------------------------------------------ CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='LRTIBasicVSR', choices=list(ARCHS), help='network (default LRTIBasicVSR)')
    p.add_argument('--size', default='tiny', choices=('tiny', 'paper'), help='width preset (default tiny)')
    p.add_argument('--lr-size', type=int, default=64, help='LR crop h = w (default 64; SpyNet needs >= 33, '
                   'LRTIBasicVSRPP >= 64)')
    p.add_argument('--long', type=int, default=None, help='L, frames of the long clip (default 4 * T)')
    p.add_argument('--clip', type=int, default=8, help='T, frames of each short clip (default 8)')
    p.add_argument('--num-clips', type=int, default=4, help='N, short clips per long clip (default 4)')
    p.add_argument('--iters', type=int, default=2, help='timed iterations per configuration (default 2)')
    p.add_argument('--warmup', type=int, default=1, help='untimed iterations before them (default 1)')
    p.add_argument('--device', default='cpu', help='torch device (default cpu)')
    p.add_argument('--threads', type=int, default=0,
                   help="intra-op CPU threads of each child (default 0: torch's default)")
    p.add_argument('--amp', default='none', choices=('none', 'float16', 'bfloat16'),
                   help='mixed precision of every configuration (train.use_amp / amp_dtype; default none)')
    p.add_argument('--fix-flow', action='store_true',
                   help='freeze the flow network (train.fix_flow), as the fine-tuning recipes do (default: train it)')
    p.add_argument('--json', default=None, help='write the report to this JSON file')
    p.add_argument('--child', choices=CONFIGS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.long is None:
        args.long = 4 * args.clip
    for key in ('clip', 'num_clips', 'iters', 'lr_size'):
        if getattr(args, key) < 1:
            p.error(f'--{key.replace("_", "-")} must be >= 1')
    if args.warmup < 0 or args.threads < 0:
        p.error('--warmup and --threads must be >= 0')
    if args.long < args.clip:
        p.error(f'--long ({args.long}) must be >= --clip ({args.clip})')
    return args


def main(argv: List[str] = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args, args.child)))
        return
    report = run(args)
    table = markdown(report)
    report['table'] = table
    print()
    print(table)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as fout:
            json.dump(report, fout, indent=2)


if __name__ == '__main__':
    main()
