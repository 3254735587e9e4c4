"""The scoring half of ``scripts/reproduce.py``: a run's weights on every clip of every test set.

Each clip runs in one whole-sequence pass (the field's convention), or in independent passes over consecutive
chunks of ``chunk`` frames (each from zero states: what a network gets from a clip when it cannot carry anything
across chunk borders); Y and RGB PSNR/SSIM per frame with BasicSR's metrics (crop border 0, output rounded to uint8
as ``tensor2img``); results cached in ``eval_<set>.json``. The reference ``bicubic`` is BasicSR's MATLAB-style
bicubic upscaling of the LR frames.
"""
import json
import os
import time
from copy import deepcopy


class CampaignError(Exception):
    """A bad campaign file or run; the message names the key, file or run at fault."""


def read_clip(folder: str, max_frames=None):
    """Frames of one clip folder (sorted PNG/JPG names) as a list of BGR uint8 arrays."""
    import cv2

    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(('.png', '.jpg', '.jpeg')))
    if max_frames:
        names = names[:max_frames]
    if not names:
        raise CampaignError(f'{folder}: no frames')
    frames = []
    for n in names:
        img = cv2.imread(os.path.join(folder, n), cv2.IMREAD_COLOR)
        if img is None:
            raise CampaignError(f'{os.path.join(folder, n)}: cannot read')
        frames.append(img)
    return frames


def bicubic_pair(gts):
    """(GT, LR) made as ``make_lmdb --make-lr 4`` makes them: each GT frame cropped to a multiple of 4 and its x4
    MATLAB-style bicubic downscale (BGR uint8 lists)."""
    from lrti_plugin.data.lmdb_tools import bicubic_downscale

    gts = [g[:g.shape[0] // 4 * 4, :g.shape[1] // 4 * 4] for g in gts]
    return gts, [bicubic_downscale(g, 4) for g in gts]


def frames_to_tensor(frames):
    """BGR uint8 frames -> (T, 3, H, W) RGB float tensor in [0, 1]."""
    import numpy as np
    import torch
    from basicsr.utils import img2tensor

    return torch.stack(img2tensor([f.astype(np.float32) / 255.0 for f in frames], bgr2rgb=True, float32=True))


BICUBIC = 'bicubic'  # a reference that is no network: BasicSR's MATLAB-style bicubic upscaling


def bicubic_upscaler(scale: int = 4):
    """A callable like a VSR network, (b, t, c, h, w) -> (b, t, c, h*scale, w*scale): MATLAB-style bicubic of
    every frame (BasicSR's ``imresize``), clamped to [0, 1]."""
    import torch
    from basicsr.utils.matlab_functions import imresize

    def upscale(x):
        b, t = x.shape[:2]
        frames = [imresize(f, scale).clamp_(0, 1) for f in x.flatten(0, 1)]
        return torch.stack(frames).unflatten(0, (b, t))
    return upscale


def build_net(network_opt: dict, weights: str):
    """The network of ``network_opt`` with ``weights`` (``params_ema`` if present, else ``params``); for
    ``weights`` = ``bicubic``, the bicubic upscaler."""
    if weights == BICUBIC:
        return bicubic_upscaler(4)  # the runner scores x4 (its test LR is x4)
    import torch
    from basicsr.archs import build_network

    net = build_network(deepcopy(network_opt))
    ckpt = torch.load(weights, map_location='cpu', weights_only=True)
    key = 'params_ema' if 'params_ema' in ckpt else 'params' if 'params' in ckpt else None
    net.load_state_dict(ckpt[key] if key else ckpt, strict=True)
    return net.eval()


def run_clip(net, x, chunk=None):
    """``net`` on one clip ``x`` (t, c, h, w), no grad: one whole-sequence pass, or one independent pass per
    ``chunk`` consecutive frames (the last chunk may be shorter)."""
    import torch

    step = chunk or x.shape[0]
    with torch.no_grad():
        return torch.cat([net(x[i:i + step].unsqueeze(0))[0] for i in range(0, x.shape[0], step)])


def evaluate(net, test: dict) -> dict:
    """Score ``net`` on every clip of one test set; each clip in one whole-sequence pass, or in independent
    chunks of ``test['chunk']`` frames (no grad)."""
    import numpy as np
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img

    clips = {}
    lq_root, gt_root = test.get('lq'), test['gt']
    for clip in sorted(os.listdir(gt_root)):
        if not os.path.isdir(os.path.join(gt_root, clip)):
            continue
        gts = read_clip(os.path.join(gt_root, clip), test.get('max_frames'))
        if lq_root:
            lqs = read_clip(os.path.join(lq_root, clip), test.get('max_frames'))
        else:  # x4 BI made here, exactly as make_lmdb --make-lr 4 makes it
            gts, lqs = bicubic_pair(gts)
        if len(lqs) != len(gts):
            raise CampaignError(f'{clip}: {len(lqs)} LR frames but {len(gts)} GT frames')
        x = frames_to_tensor(lqs)
        t0 = time.time()
        out = run_clip(net, x, test.get('chunk'))  # (T, 3, 4H, 4W)
        seconds = time.time() - t0
        per = {'psnr_y': [], 'ssim_y': [], 'psnr': [], 'ssim': []}
        for i, gt in enumerate(gts):
            sr = tensor2img([out[i]])  # uint8 BGR, rounded as BasicSR does
            for y in (True, False):
                suffix = '_y' if y else ''
                per['psnr' + suffix].append(float(calculate_psnr(sr, gt, 0, test_y_channel=y)))
                per['ssim' + suffix].append(float(calculate_ssim(sr, gt, 0, test_y_channel=y)))
        clips[clip] = {'frames': len(gts), 'seconds': seconds, 'per_frame': per,
                       'mean': {k: float(np.mean(v)) for k, v in per.items()}}
        print(f'[reproduce]   {clip}: Y-PSNR {clips[clip]["mean"]["psnr_y"]:.4f} ({seconds:.0f} s)', flush=True)
    if not clips:
        raise CampaignError(f'{gt_root}: no clip folders')
    metrics = next(iter(clips.values()))['mean']
    return {'clips': clips, 'mean_of_clips': {k: float(np.mean([c['mean'][k] for c in clips.values()]))
                                              for k in metrics}}


def eval_run(run_dir: str, network_opt: dict, weights: str, tests: dict, threads) -> dict:
    """Score ``weights`` on every test set (cached in ``eval_<set>.json``)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    results, net = {}, None
    for name, test in tests.items():
        path = os.path.join(run_dir, f'eval_{name}.json')
        if os.path.isfile(path):
            with open(path) as f:
                results[name] = json.load(f)
            continue
        print(f'[reproduce] scoring {weights} on {name}', flush=True)
        net = net or build_net(network_opt, weights)
        results[name] = {'weights': weights, **evaluate(net, test)}
        os.makedirs(run_dir, exist_ok=True)
        with open(path + '.tmp', 'w') as f:
            json.dump(results[name], f)
        os.replace(path + '.tmp', path)
    return results


# ----------------------------------------------------------------------------- report
