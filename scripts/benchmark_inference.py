"""Inference modes measured side by side: quality, peak memory against video length, and speed.

    python scripts/benchmark_inference.py --json results/benchmark_inference.json            # everything
    python scripts/benchmark_inference.py --skip-vid4 --lengths 50 200                       # memory part only
    python scripts/benchmark_inference.py --skip-memory --modes whole --repeats 6            # speed vs BasicSR
    python scripts/benchmark_inference.py --skip-vid4 --skip-memory --ops 6          # same operators?

Part 1, quality and speed (needs the official BasicVSR Vimeo-90K BIx4 weights, ``scripts/get_weights.py``,
and Vid4 frames, ``--vid4``): every mode of :mod:`lrti_plugin.archs.streaming` on whole Vid4 clips with
``LRTIBasicVSR`` (num_block 30), and BasicSR's own ``BasicVSR`` whole-sequence pass on the same weights and
input. Y-PSNR (BasicSR's metric, crop border 0, uint8 output as ``tensor2img``), max |difference| to our
whole pass in float32 and in uint8 levels, and frames/s. Every timing of a clip runs in one process after a
short warm-up of both networks, in ``--repeats`` rounds over all entries (every other round in reverse order,
so that no entry always runs first); the best time of each is kept, all are in the JSON. Only ratios within
one run are meaningful; the speed of our ``whole`` against BasicSR's is also given round by round (both
clips' times summed per round), with the median of those paired ratios. ``--modes`` keeps only some
entries (``whole`` is always run: it is the reference). ``--ops FRAMES`` adds a census of the operators both whole
passes call (``torch.profiler``), which tells a difference in work from the machine's noise.

Part 2, peak memory against video length (a tiny ``LRTIBasicVSR``, random weights, synthetic frames made on
the fly so that reading costs no memory): for each mode and length, a child process streams the video and
reports the growth of its resident set after a 30-frame warm-up (``ru_maxrss`` after, minus the RSS
before, the kernel's high-water mark reset first) or, on an accelerator, ``max_memory_allocated``. The
parent never imports torch.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(REPO, 'experiments', 'pretrained_models', 'BasicVSR', 'BasicVSR_Vimeo90K_BIx4-2a29695a.pth')
QUALITY_MODES = [('whole', {}), ('exact', {'chunk': 10}), ('exact', {'chunk': 20}), ('chunks', {'chunk': 10}),
                 ('chunks', {'chunk': 20}), ('lookahead', {'chunk': 10, 'lookahead': 2}),
                 ('lookahead', {'chunk': 10, 'lookahead': 5}), ('lookahead', {'chunk': 10, 'lookahead': 10})]
MEMORY_MODES = [('whole', {}), ('exact', {'chunk': 10}), ('exact', {'chunk': 10, 'spill': True}),
                ('lookahead', {'chunk': 10, 'lookahead': 5}), ('chunks', {'chunk': 10})]
BASICSR = 'BasicSR BasicVSR (whole)'


def label(mode, kw):
    extra = ', '.join(k if v is True else f'{k} {v}' for k, v in kw.items())
    return f'{mode} ({extra})' if extra else mode


# ---- part 1: Vid4 ---------------------------------------------------------------------------------------------
def _official_nets(args):
    """Our ``LRTIBasicVSR`` and BasicSR's ``BasicVSR``, both with the official weights, in eval mode."""
    import torch
    from basicsr.archs.basicvsr_arch import BasicVSR

    sys.path.insert(0, REPO)
    from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR
    from lrti_plugin.utils.checkpoint import load_weights

    torch.set_num_threads(args.threads) if args.threads else None
    ours = LRTIBasicVSR(num_feat=64, num_block=30).eval()
    load_weights(ours, args.weights)
    theirs = BasicVSR(num_feat=64, num_block=30).eval()
    load_weights(theirs, args.weights)
    return ours, theirs


def _vid4_lq(args, clip: str, frames=None):
    """A Vid4 clip's LR frames (the first ``frames``, or all) as a (1, T, 3, h, w) float tensor in [0, 1]."""
    import torch

    from lrti_plugin.video_io import FrameFolder, list_frames

    src = FrameFolder(list_frames(os.path.join(args.vid4, 'BIx4', clip)))
    n = min(frames or len(src), len(src))
    return torch.from_numpy(src.read(0, n)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


def _streamed(net, lqs, mode: str, **kw):
    """``net`` over all of ``lqs`` in one streaming ``mode``, its pieces joined: (1, T, 3, 4h, 4w)."""
    import torch

    from lrti_plugin.archs.streaming import stream

    return torch.cat([sr for _, sr in stream(net, lambda a, b: lqs[:, a:b], lqs.size(1), mode, **kw)], dim=1)


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def vid4_child(args) -> dict:
    import numpy as np
    import torch
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    sys.path.insert(0, REPO)
    from lrti_plugin.video_io import FrameFolder, list_frames

    if args.keep_freed_memory:
        from lrti_plugin.utils.host_memory import keep_freed_memory
        if not keep_freed_memory():
            raise SystemExit('--keep-freed-memory: not applied (needs glibc; LRTI_KEEP_FREED_MEMORY and MALLOC_*_ '
                             'unset)')
    ours, theirs = _official_nets(args)
    rows = {}
    for clip in args.clips:
        gt_src = FrameFolder(list_frames(os.path.join(args.vid4, 'GT', clip)))
        lqs = _vid4_lq(args, clip, args.frames)
        gts = [g[:, :, ::-1] for g in gt_src.read(0, lqs.size(1))]  # BGR, as BasicSR scores

        fns = {BASICSR: lambda lqs=lqs: theirs(lqs)}
        for mode, kw in QUALITY_MODES:
            if args.modes and mode != 'whole' and label(mode, kw) not in args.modes and mode not in args.modes:
                continue

            fns[label(mode, kw)] = lambda mode=mode, kw=kw, lqs=lqs: _streamed(ours, lqs, mode, **kw)
        with torch.no_grad():  # warm-up on a few frames, so that no entry pays for first-call allocations
            theirs(lqs[:, :3])
            ours(lqs[:, :3])
        names, times, faults, results = list(fns), {}, {}, {}
        for r in range(args.repeats):  # round robin, every other round reversed: no entry always goes first
            for name in (names if r % 2 == 0 else names[::-1]):
                f0, t0 = _minor_faults(), time.perf_counter()
                with torch.no_grad():
                    out = fns[name]()
                times.setdefault(name, []).append(time.perf_counter() - t0)
                faults.setdefault(name, []).append(_minor_faults() - f0)
                results[name] = (out, min(times[name]))
                print(f'[benchmark] {clip}, round {r + 1}/{args.repeats}: {name} {times[name][-1]:.1f} s',
                      file=sys.stderr, flush=True)
        whole = results['whole'][0]
        whole_u8 = np.stack([tensor2img([f]) for f in whole[0]]).astype(int)
        for name, (out, sec) in results.items():
            u8 = np.stack([tensor2img([f]) for f in out[0]])
            rows.setdefault(name, {})[clip] = {
                'psnr_y': float(np.mean([calculate_psnr(u, g, 0, test_y_channel=True) for u, g in zip(u8, gts)])),
                'max_abs_vs_whole': float((out - whole).abs().max()),
                'max_levels_vs_whole': int(np.abs(u8.astype(int) - whole_u8).max()),
                'seconds': sec, 'all_seconds': times[name], 'page_faults': faults[name], 'frames': lqs.size(1)}
        print(f'[benchmark] {clip}: done', file=sys.stderr, flush=True)
    return rows


# ---- part 2: memory against length ----------------------------------------------------------------------------
def memory_child(args) -> dict:
    import gc
    import resource

    import torch

    sys.path.insert(0, REPO)
    from benchmark_training import _malloc_trim, _reset_high_water_mark, _rss_mib  # the same RSS bookkeeping

    from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR
    from lrti_plugin.archs.streaming import stream

    torch.set_num_threads(args.threads) if args.threads else None
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = LRTIBasicVSR(num_feat=16, num_block=1).eval().to(device)
    h, w = args.size

    def read(a, b):  # synthetic frames made on demand: reading holds nothing
        g = torch.Generator().manual_seed(a)
        return torch.rand(1, b - a, 3, h, w, generator=g).to(device)

    kw = json.loads(args.kw)
    with torch.no_grad():  # warm-up: first-call allocations (kernels, caches) are not the mode's memory
        for _ in stream(net, read, min(args.length, 30), args.mode, **kw):
            pass
    gc.collect()
    _malloc_trim()
    hwm_reset = _reset_high_water_mark()
    before = _rss_mib() * 2 ** 20
    if device.type != 'cpu':
        torch.accelerator.reset_peak_memory_stats()
    t0 = time.perf_counter()
    frames = 0
    with torch.no_grad():
        for _, sr in stream(net, read, args.length, args.mode, **kw):
            frames += sr.size(1)
            del sr  # a sink would write the frames out and drop them
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    out = {'frames': frames, 'seconds': seconds, 'host_growth_bytes': peak, 'hwm_reset': hwm_reset}
    if device.type != 'cpu':
        out['device_peak_bytes'] = torch.accelerator.max_memory_allocated()
    return out


# ---- part 3: operator census ------------------------------------------------------------------------------------
def ops_child(args) -> dict:
    """Both whole passes over the first ``--ops`` frames of the first clip under ``torch.profiler``: per operator,
    how many calls and how much self CPU time (ms). The counts do not depend on how busy the machine is."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    ours, theirs = _official_nets(args)
    lqs = _vid4_lq(args, args.clips[0], args.ops)
    fns = {BASICSR: lambda: theirs(lqs), 'whole': lambda: _streamed(ours, lqs, 'whole')}
    census = {}
    with torch.no_grad():
        for name, fn in fns.items():
            fn()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            census[name] = {e.key: [e.count, e.self_cpu_time_total / 1e3] for e in prof.key_averages()}
    return {'clip': args.clips[0], 'frames': lqs.size(1), 'ops': census}


def print_ops(census: dict, top: int = 8) -> dict:
    """The ``top`` operators by self time and every operator whose call count differs between the two passes."""
    theirs, ours = census['ops'][BASICSR], census['ops']['whole']
    names = sorted(set(theirs) | set(ours), key=lambda k: -max(theirs.get(k, [0, 0])[1], ours.get(k, [0, 0])[1]))
    differ = [k for k in names if theirs.get(k, [0])[0] != ours.get(k, [0])[0]]
    total = {n: sum(v[1] for v in ops.values()) for n, ops in (('basicsr', theirs), ('ours', ours))}
    print(f'\nOperators of both whole passes ({census["clip"]}, {census["frames"]} frames, torch.profiler): the '
          f'{top} costliest, then every one whose call count differs')
    print('| operator | calls, BasicSR | calls, ours | self ms, BasicSR | self ms, ours |')
    print('|---|---|---|---|---|')
    for k in names[:top] + [k for k in differ if k not in names[:top]]:
        a, b = theirs.get(k, [0, 0.0]), ours.get(k, [0, 0.0])
        print(f'| {k} | {a[0]} | {b[0]} | {a[1]:.1f} | {b[1]:.1f} |')
    print(f'| total | | | {total["basicsr"]:.1f} | {total["ours"]:.1f} |')
    return {'differing_counts': {k: [theirs.get(k, [0])[0], ours.get(k, [0])[0]] for k in differ},
            'self_ms_total': total}


# ---- the parent -----------------------------------------------------------------------------------------------
def child(argv) -> dict:
    # the child's stderr (its progress lines, and any traceback) goes straight to ours; its stdout is the JSON
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f'[benchmark] child {argv} failed (exit {out.returncode}; its error is above)')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--vid4', default=os.path.join(REPO, '..', 'shared', 'data', 'vid4'))
    parser.add_argument('--clips', nargs='+', default=['calendar', 'city', 'foliage', 'walk'])
    parser.add_argument('--weights', default=WEIGHTS)
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--frames', type=int, help='only the first FRAMES frames of each clip (many short rounds '
                        'for the speed comparison; the Y-PSNR is then not the clip\'s)')
    parser.add_argument('--skip-vid4', action='store_true')
    parser.add_argument('--skip-memory', action='store_true')
    parser.add_argument('--modes', nargs='+', help='Vid4 entries to run besides whole and BasicSR\'s pass: a mode '
                        '(all its settings) or a label such as "exact (chunk 10)"')
    parser.add_argument('--lengths', type=int, nargs='+', default=[50, 200, 1000])
    parser.add_argument('--size', type=int, nargs=2, default=[64, 64], metavar=('H', 'W'))
    parser.add_argument('--device', default='cpu', help='device of the memory part (cpu, or an accelerator)')
    parser.add_argument('--threads', type=int)
    parser.add_argument('--ops', type=int, metavar='FRAMES',
                        help='also count the operators of both whole passes over the first FRAMES frames of the '
                        'first clip (torch.profiler; the counts do not depend on the machine\'s load)')
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='Vid4 part: glibc keeps freed memory, as lrti_plugin.infer sets it (both networks)')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument('--child', choices=('vid4', 'memory', 'ops'), help=argparse.SUPPRESS)
    parser.add_argument('--mode', help=argparse.SUPPRESS)
    parser.add_argument('--kw', default='{}', help=argparse.SUPPRESS)
    parser.add_argument('--length', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({'vid4': vid4_child, 'memory': memory_child, 'ops': ops_child}[args.child](args)))
        return 0
    common = [*(['--threads', str(args.threads)] if args.threads else [])]
    result = {'machine': _machine(), 'vid4': None, 'memory': {}}
    if not args.skip_vid4:
        if not (os.path.isdir(args.vid4) and os.path.isfile(args.weights)):
            print(f'[benchmark] skipping Vid4: need {args.vid4} and {args.weights} (scripts/get_weights.py)')
        else:
            modes = ['--modes', *args.modes] if args.modes else []
            result['vid4'] = child(['--child', 'vid4', '--vid4', args.vid4, '--weights', args.weights, '--clips',
                                    *args.clips, '--repeats', str(args.repeats), *modes, *common,
                                    *(['--keep-freed-memory'] if args.keep_freed_memory else []),
                                    *(['--frames', str(args.frames)] if args.frames else [])])
            result['whole_vs_basicsr'] = paired_speed(result['vid4'])
            print_vid4(result['vid4'])
    if args.ops:  # part 3 (needs the same weights and frames as part 1)
        result['ops'] = child(['--child', 'ops', '--vid4', args.vid4, '--weights', args.weights, '--clips',
                               *args.clips, '--ops', str(args.ops), *common])
        result['ops'].update(print_ops(result['ops']))
    for mode, kw in ([] if args.skip_memory else MEMORY_MODES):
        for length in args.lengths:
            row = child(['--child', 'memory', '--mode', mode, '--kw', json.dumps(kw), '--length', str(length),
                         '--size', *map(str, args.size), '--device', args.device, *common])
            result['memory'].setdefault(label(mode, kw), {})[length] = row
            print(f'[benchmark] memory {label(mode, kw)}, {length} frames: '
                  f'{row["host_growth_bytes"] / 2 ** 20:.0f} MiB host', file=sys.stderr, flush=True)
    if result['memory']:
        print_memory(result['memory'], args.lengths, args.size)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return 0


def print_vid4(rows: dict) -> None:
    clips = list(next(iter(rows.values())))
    frames = sum(rows['whole'][c]['frames'] for c in clips)
    whole_fps = frames / sum(rows['whole'][c]['seconds'] for c in clips)
    print(f'\nVid4 ({", ".join(clips)}), official BasicVSR Vimeo-90K BIx4 weights')
    print('| mode | Y-PSNR (mean of clips) | max abs diff vs whole (float) | max diff (uint8 levels) | frames/s | '
          'time vs whole |')
    print('|---|---|---|---|---|---|')
    for name, per in rows.items():
        fps = frames / sum(per[c]['seconds'] for c in clips)
        psnr = sum(per[c]['psnr_y'] for c in clips) / len(clips)
        diff = max(per[c]['max_abs_vs_whole'] for c in clips)
        levels = max(per[c]['max_levels_vs_whole'] for c in clips)
        print(f'| {name} | {psnr:.4f} | {diff:.2e} | {levels} | {fps:.2f} | {whole_fps / fps:.2f}x |')


def paired_speed(rows: dict) -> dict:
    """Our whole pass's speed relative to BasicSR's, round by round (BasicSR's time / ours, clips summed)."""
    clips = list(rows['whole'])
    ours = [sum(t) for t in zip(*(rows['whole'][c]['all_seconds'] for c in clips))]
    theirs = [sum(t) for t in zip(*(rows[BASICSR][c]['all_seconds'] for c in clips))]
    ratios = [b / a for a, b in zip(ours, theirs)]
    median = statistics.median(ratios)
    print(f'\nOur whole pass against BasicSR\'s BasicVSR, round by round ({", ".join(clips)} summed): '
          + ', '.join(f'{b:.1f} / {a:.1f} s = {r:.3f}x' for a, b, r in zip(ours, theirs, ratios))
          + f'; median {median:.3f}x, range {min(ratios):.3f}-{max(ratios):.3f}x')
    ours_faults = [sum(f) for f in zip(*(rows['whole'][c]['page_faults'] for c in clips))]
    theirs_faults = [sum(f) for f in zip(*(rows[BASICSR][c]['page_faults'] for c in clips))]
    print(f'Minor page faults per pass, median: ours {statistics.median(ours_faults):.0f}, '
          f'BasicSR {statistics.median(theirs_faults):.0f}')
    return {'ours_seconds': ours, 'basicsr_seconds': theirs, 'ratios': ratios, 'median': median,
            'ours_page_faults': ours_faults, 'basicsr_page_faults': theirs_faults}


def print_memory(rows: dict, lengths, size) -> None:
    print(f'\nPeak memory growth while streaming (tiny LRTIBasicVSR 16x1, {size[0]}x{size[1]} LR frames), MiB')
    print('| mode | ' + ' | '.join(f'{n} frames' for n in lengths) + ' |')
    print('|---|' + '---|' * len(lengths))
    for name, per in rows.items():
        key = 'device_peak_bytes' if 'device_peak_bytes' in next(iter(per.values())) else 'host_growth_bytes'
        print(f'| {name} | ' + ' | '.join(f'{per[n][key] / 2 ** 20:.0f}' for n in lengths) + ' |')


def _machine() -> dict:
    import platform

    return {'cpu': platform.processor() or platform.machine(), 'nproc': os.cpu_count(),
            'python': platform.python_version()}


if __name__ == '__main__':
    sys.exit(main())
