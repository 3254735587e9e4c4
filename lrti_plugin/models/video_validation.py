"""Whole-clip testing and validation for ``LRTIModel`` (BasicSR's ``VideoRecurrentModel`` hooks, made device-agnostic).

A mixin placed before ``VideoRecurrentModel`` in the model's bases, so its ``test`` and ``dist_validation``
replace BasicSR's. What it answers in BasicSR: ``test`` ignores the EMA network and leaves ``net_g`` in train
mode; ``dist_validation`` creates its metric tensors on a hard-coded CUDA device, and its in-place
``unsqueeze_``/``squeeze_`` of the input also reshapes the model's own input on a CPU; images cannot be saved
during training.
"""
from collections import Counter
from os import path as osp

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import imwrite, tensor2img
from basicsr.utils.dist_util import get_dist_info
from torch import distributed as dist
from tqdm import tqdm

from lrti_plugin.archs.propagation import RecurrentVSR
from lrti_plugin.archs.streaming import stream


def _bare(net):
    """The network inside a DataParallel / DistributedDataParallel wrapper (or the network itself)."""
    return net.module if hasattr(net, 'module') else net


class WholeClipValidation:
    """``test``, ``dist_validation`` and ``_score_clip`` of ``LRTIModel`` (each clip in one whole pass, or
    exactly the same output by streaming when ``val.stream_chunk`` is set)."""

    def test(self):
        """Run the whole clip ``self.lq`` (B, T, 3, H, W) through the EMA net if any, else ``net_g``.

        Sets ``self.output`` (B, T, 3, sH, sW), or (B, 3, sH, sW) with ``val.center_frame_only``.
        The network's train/eval mode is restored afterwards.
        """
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        val_opt = self.opt.get('val') or {}
        flip_seq = val_opt.get('flip_seq', False)
        self.center_frame_only = val_opt.get('center_frame_only', False)
        lq = self.lq
        n = lq.size(1)
        if flip_seq:
            lq = torch.cat([lq, lq.flip(1)], dim=1)  # (B, 2T, 3, H, W)
        chunk = val_opt.get('stream_chunk')
        net.eval()
        try:
            with torch.no_grad():
                if chunk and isinstance(_bare(net), RecurrentVSR):  # same output, one chunk of features at a time
                    pieces = stream(_bare(net), lambda a, b: lq[:, a:b], lq.size(1), 'exact', int(chunk))
                    output = torch.cat([sr for _, sr in pieces], dim=1)
                else:
                    output = net(lq)
        finally:
            net.train(was_training)
        if flip_seq:
            output = 0.5 * (output[:, :n] + output[:, n:].flip(1))
        if self.center_frame_only:
            output = output[:, n // 2]
        self.output = output

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name']
        metrics_opt = self.opt['val'].get('metrics')
        rank, world_size = get_dist_info()
        if metrics_opt:
            frames_per_clip = Counter(dataset.data_info['folder'])
            self.metric_results = {
                clip: torch.zeros(n, len(metrics_opt), dtype=torch.float32, device=self.device)
                for clip, n in frames_per_clip.items()
            }
            self._initialize_best_metric_results(dataset_name)

        num_clips = len(dataset)
        pbar = tqdm(total=num_clips, unit='clip', disable=rank != 0)
        # Every rank runs the same number of clips so collective calls stay matched (BasicSR's padding).
        num_pad = (world_size - num_clips % world_size) % world_size
        for i in range(rank, num_clips + num_pad, world_size):
            val_data = dataset[min(i, num_clips - 1)]
            clip = val_data['folder']
            self.feed_data({k: v.unsqueeze(0) for k, v in val_data.items() if k in ('lq', 'gt')})
            self.test()
            visuals = self.get_current_visuals()
            del self.lq, self.output
            if hasattr(self, 'gt'):
                del self.gt
            if i < num_clips:
                self._score_clip(visuals, clip, dataset_name, current_iter, save_img, metrics_opt)
            pbar.update(world_size if rank == 0 else 0)
            pbar.set_description(f'Clip: {clip}')
        pbar.close()

        if metrics_opt:
            if self.opt['dist']:
                for tensor in self.metric_results.values():
                    dist.reduce(tensor, 0)
                dist.barrier()
            if rank == 0:
                self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _score_clip(self, visuals, clip, dataset_name, current_iter, save_img, metrics_opt):
        """Compute metrics of every frame of one clip and optionally save the SR frames as PNG."""
        result = visuals['result']
        gt = visuals.get('gt')
        if self.center_frame_only:
            result = result.unsqueeze(1)
            gt = gt.unsqueeze(1) if gt is not None else None
        suffix = current_iter if self.opt['is_train'] else (self.opt['val'].get('suffix') or self.opt['name'])
        for idx in range(result.size(1)):
            metric_data = {'img': tensor2img([result[0, idx]])}  # uint8 BGR
            if gt is not None:
                metric_data['img2'] = tensor2img([gt[0, idx]])
            if save_img:
                path = osp.join(self.opt['path']['visualization'], dataset_name, clip, f'{idx:08d}_{suffix}.png')
                imwrite(metric_data['img'], path)
            if metrics_opt:
                for m, opt_ in enumerate(metrics_opt.values()):
                    self.metric_results[clip][idx, m] += calculate_metric(metric_data, opt_)
