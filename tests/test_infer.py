"""python -m lrti_plugin.infer: frame folders and video files in and out, every mode, bad inputs."""
import copy
import os

import cv2
import numpy as np
import pytest
import torch

from lrti_plugin import infer, video_io
from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR

NAMES = ['a_001.png', 'a_002.png', 'a_003.png', 'b_010.png', 'b_011.jpg']  # names are kept, extension becomes png


@pytest.fixture
def clip(tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.uniform(0, 255, (9, 10, 3)).astype(np.float32), (40, 36), interpolation=cv2.INTER_CUBIC)
    for i, name in enumerate(NAMES):
        img = np.clip(np.roll(base, i, axis=1), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / name), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    return folder


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    net = LRTIBasicVSR(num_feat=8, num_block=1)
    ema = LRTIBasicVSR(num_feat=8, num_block=1)
    path = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict(), 'params_ema': ema.state_dict()}, path)
    return path, ema


def _frames(folder, count=None):
    """(T, 3, H, W) float frames of a folder, as infer reads them."""
    source = video_io.FrameFolder(video_io.list_frames(str(folder))[:count])
    return torch.from_numpy(source.read(0, len(source))).permute(0, 3, 1, 2).float() / 255.0


def _expected(net, folder, spans):
    frames = _frames(folder)
    with torch.no_grad():
        outs = [net.eval()(frames[s:e].unsqueeze(0))[0] for s, e in spans]
    out = torch.cat(outs).clamp(0, 1)
    return (out.permute(0, 2, 3, 1).numpy()[..., ::-1] * 255).round().astype(np.uint8)


def _run(argv, capsys):
    code = infer.main([str(a) for a in argv])
    return code, capsys.readouterr()


@pytest.mark.parametrize('mode, spans', [('whole', [(0, 5)]), ('exact', [(0, 5)]),
                                         ('chunks', [(0, 2), (2, 4), (4, 5)])])
def test_upscales_a_folder_with_the_ema_weights_keeping_names(clip, weights, tmp_path, capsys, mode, spans):
    path, ema = weights
    out = tmp_path / 'sr'
    code, cap = _run(['-i', clip, '-o', out, '--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8',
                      'num_block=1', '--mode', mode, '--chunk', 2, '--device', 'cpu'], capsys)
    assert code == 0, cap.err
    assert sorted(os.listdir(out)) == sorted(os.path.splitext(n)[0] + '.png' for n in NAMES)
    want = _expected(ema, clip, spans)
    for i, name in enumerate(NAMES):
        got = cv2.imread(str(out / (os.path.splitext(name)[0] + '.png')))
        assert got.shape == (144, 160, 3)
        assert np.abs(got.astype(int) - want[i].astype(int)).max() <= 1  # uint8 rounding
    assert not [p for p in os.listdir(tmp_path) if '.partial-' in p]


@pytest.mark.parametrize('mode', ['whole', 'exact'])
def test_state_bound_from_arch_opt_reaches_every_mode(clip, weights, tmp_path, capsys, mode):
    """``--arch-opt state_max_rms=B`` upscales as the bounded network does (streaming too), not as the free one."""
    path, ema = weights
    out = tmp_path / 'sr'
    code, cap = _run(['-i', clip, '-o', out, '--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8',
                      'num_block=1', 'state_max_rms=0.002', '--mode', mode, '--chunk', 2, '--device', 'cpu'], capsys)
    assert code == 0, cap.err
    free = _expected(ema, clip, [(0, 5)])
    want = _expected(copy.deepcopy(ema).bound_states(0.002), clip, [(0, 5)])
    assert np.abs(want.astype(int) - free.astype(int)).max() > 1  # the bound binds on this clip
    for i, name in enumerate(NAMES):
        got = cv2.imread(str(out / (os.path.splitext(name)[0] + '.png')))
        assert np.abs(got.astype(int) - want[i].astype(int)).max() <= 1


def _one_line_error(code, cap, *needles):
    assert code == 1
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('lrti_plugin.infer: error: '), cap.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs_are_one_line_and_leave_everything_untouched(clip, weights, tmp_path, capsys):
    path, _ = weights
    model = ['--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8', 'num_block=1', '--device', 'cpu']
    out = tmp_path / 'sr'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    _one_line_error(*_run(['-i', clip, '-o', out, *model], capsys), str(out), 'exists', '--overwrite')
    assert (out / 'keep.txt').read_text() == 'mine'
    _one_line_error(*_run(['-i', clip, '-o', clip, *model], capsys), 'must not be')
    _one_line_error(*_run(['-i', clip, '-o', clip / 'sub', *model], capsys), 'must not be')

    wide = ['--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=16', 'num_block=1']
    _one_line_error(*_run(['-i', clip, '-o', tmp_path / 'x', *wide], capsys), str(path), 'wrong arch or width?')
    _one_line_error(*_run(['-i', clip, '-o', tmp_path / 'x', '--arch', 'LRTIBasicVSR', '--weights', path,
                           '--arch-opt', 'num_fet=8'], capsys), 'num_fet', 'did you mean num_feat?')

    odd = tmp_path / 'odd'
    odd.mkdir()
    for name in ('1.png', '2.png'):
        cv2.imwrite(str(odd / name), np.zeros((36, 40 if name == '1.png' else 44, 3), np.uint8))
    _one_line_error(*_run(['-i', odd, '-o', tmp_path / 'x', *model], capsys), '2.png', 'one size')
    (odd / '2.png').unlink()
    (odd / 'notes.txt').write_text('x')
    _one_line_error(*_run(['-i', odd, '-o', tmp_path / 'x', *model], capsys), 'notes.txt', 'not an image')
    small = tmp_path / 'small'
    small.mkdir()
    cv2.imwrite(str(small / '1.png'), np.zeros((20, 20, 3), np.uint8))
    _one_line_error(*_run(['-i', small, '-o', tmp_path / 'x', *model], capsys), '>= 33')
    _one_line_error(*_run(['-i', clip, '-o', tmp_path / 'x', *model, '--device', 'nonsense'], capsys),
                    "--device 'nonsense': not a device")
    assert not (tmp_path / 'x').exists()
    assert sorted(os.listdir(clip)) == sorted(NAMES), 'the input was touched'


def test_an_interrupted_run_leaves_no_output(clip, weights, tmp_path, capsys, monkeypatch):
    path, _ = weights

    def interrupt(*args, **kwargs):
        yield 0, torch.zeros(1, 2, 3, 144, 160)
        raise KeyboardInterrupt

    monkeypatch.setattr(infer, 'upscale', interrupt)
    out = tmp_path / 'sr'
    code, cap = _run(['-i', clip, '-o', out, '--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8',
                      'num_block=1', '--device', 'cpu'], capsys)
    assert code == 1 and 'interrupted' in cap.err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if '.partial-' in p]


def test_an_options_file_gives_the_arch_and_its_weights(clip, weights, tmp_path, capsys):
    import yaml

    path, ema = weights
    opt = tmp_path / 'model.yml'
    opt.write_text(yaml.safe_dump({'name': 'x', 'model_type': 'LRTIModel', 'network_g': {
        'type': 'LRTIBasicVSR', 'num_feat': 8, 'num_block': 1, 'spynet_path': '/not/needed.pth'},
        'path': {'pretrain_network_g': str(path)}}))
    code, cap = _run(['-i', clip, '-o', tmp_path / 'sr', '--opt', opt, '--device', 'cpu', '--max-frames', 3], capsys)
    assert code == 0, cap.err
    frames = _frames(clip, 3)
    with torch.no_grad():
        want = (ema.eval()(frames.unsqueeze(0))[0].clamp(0, 1).permute(0, 2, 3, 1).numpy()[..., ::-1] * 255).round()
    got = np.stack([cv2.imread(str(tmp_path / 'sr' / f'a_00{i}.png')) for i in (1, 2, 3)])
    assert sorted(os.listdir(tmp_path / 'sr')) == ['a_001.png', 'a_002.png', 'a_003.png']
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def _make_video(path, frames, fps=10, audio_seconds=None, audio=True):
    """An mp4 of ``frames`` ((n, H, W, 3) uint8 RGB, H.264 lossless) with an AAC sine track."""
    import av

    with av.open(str(path), 'w') as out:
        video = out.add_stream('libx264', rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], 'yuv444p'
        video.options = {'crf': '0'}
        sound = out.add_stream('aac', rate=8000) if audio else None
        for img in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            seconds = audio_seconds or len(frames) / fps
            t = np.arange(int(8000 * seconds)) / 8000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format='fltp', layout='mono')
            frame.sample_rate, frame.pts = 8000, 0
            for packet in [*sound.encode(frame), *sound.encode()]:
                out.mux(packet)


def _probe(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = dict(rate=v.average_rate, codec=v.codec_context.name, primaries=v.codec_context.color_primaries)
        decoded = list(c.decode(v))
        frames = [f.to_ndarray(format='rgb24') for f in decoded]
        pts = [f.pts * v.time_base for f in decoded]
    with av.open(str(path)) as c:
        audio = [s for s in c.streams if s.type == 'audio']
        info['audio'] = [(s.codec_context.name, s.rate) for s in audio]
        packets = [(p.pts, bytes(p)) for p in c.demux(audio[0]) if p.size] if audio else []
    return np.stack(frames), pts, packets, info


def test_upscales_an_mp4_with_audio_keeping_frames_rate_timestamps_and_audio(tmp_path, weights, capsys):
    path, ema = weights
    rng = np.random.default_rng(1)
    base = cv2.resize(rng.uniform(0, 255, (9, 10, 3)).astype(np.float32), (40, 36), interpolation=cv2.INTER_CUBIC)
    frames = np.stack([np.clip(np.roll(base, i, axis=1), 0, 255).astype(np.uint8) for i in range(7)])
    src = tmp_path / 'in.mp4'
    _make_video(src, frames, fps=10)
    out = tmp_path / 'out.mp4'
    code, cap = _run(['-i', src, '-o', out, '--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8',
                      'num_block=1', '--mode', 'exact', '--chunk', 3, '--device', 'cpu', '--crf', 0], capsys)
    assert code == 0, cap.err
    src_frames, src_pts, src_audio, src_info = _probe(src)
    got, pts, audio, info = _probe(out)
    assert len(got) == 7 and pts == src_pts and info['rate'] == src_info['rate'] == 10
    assert info['codec'] == 'h264' and info['primaries'] == 1  # BT.709
    assert info['audio'] == src_info['audio'] and audio == src_audio  # the very packets, same timestamps
    import av

    lq = torch.from_numpy(src_frames).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    with torch.no_grad():
        want = ema.eval()(lq)[0].clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    # lossless H.264 (--crf 0) of yuv420p BT.709: the SR frames through that colour conversion, nothing else
    trip = np.stack([av.VideoFrame.from_ndarray(x, format='rgb24').reformat(format='yuv420p', dst_colorspace='ITU709')
                     .reformat(format='rgb24', src_colorspace='ITU709').to_ndarray() for x in want])
    assert got.shape == (7, 144, 160, 3)
    assert np.abs(got.astype(int) - trip).max() <= 2
    assert np.abs(got.astype(int) - want).mean() > 0.5  # (the conversion is not a no-op: the check above has teeth)


def test_video_bad_inputs_are_one_line(tmp_path, weights, capsys):
    path, _ = weights
    model = ['--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8', 'num_block=1', '--device', 'cpu']
    corrupt = tmp_path / 'corrupt.mp4'
    corrupt.write_bytes(b'not a video at all' * 100)
    _one_line_error(*_run(['-i', corrupt, '-o', tmp_path / 'o.mp4', *model], capsys), 'corrupt.mp4', 'cannot decode')
    empty = tmp_path / 'empty.mp4'
    _make_video(empty, np.zeros((0, 36, 40, 3), np.uint8), audio_seconds=0.5)
    _one_line_error(*_run(['-i', empty, '-o', tmp_path / 'o.mp4', *model], capsys), 'empty.mp4', 'no video frames')
    good = tmp_path / 'good.mp4'
    _make_video(good, np.zeros((2, 36, 40, 3), np.uint8), audio=False)
    before = good.read_bytes()
    _one_line_error(*_run(['-i', good, '-o', good, *model, '--overwrite'], capsys), 'must not be')
    _one_line_error(*_run(['-i', good, '-o', tmp_path / 'nowhere' / 'o.mp4', *model], capsys), 'cannot write into')
    assert good.read_bytes() == before
    assert not (tmp_path / 'o.mp4').exists() and not [p for p in os.listdir(tmp_path) if '.partial-' in p]


def test_gt_scores_every_frame_and_writes_the_report(clip, weights, tmp_path, capsys):
    import json

    from basicsr.metrics import calculate_psnr

    path, _ = weights
    out = tmp_path / 'sr'
    model = ['--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8', 'num_block=1', '--device', 'cpu']
    gt = tmp_path / 'gt'
    gt.mkdir()
    rng = np.random.default_rng(3)
    for name in NAMES:  # a GT of the output's size (its content does not matter for the bookkeeping)
        cv2.imwrite(str(gt / (os.path.splitext(name)[0] + '.png')), rng.integers(0, 256, (144, 160, 3), np.uint8))
    code, cap = _run(['-i', clip, '-o', out, *model, '--gt', gt, '--crop-border', 2], capsys)
    assert code == 0, cap.err
    report = json.loads((tmp_path / 'sr_scores' / 'scores.json').read_text())
    assert [f['frame'] for f in report['frames']] == [os.path.splitext(n)[0] for n in NAMES]
    for f, name in zip(report['frames'], NAMES):
        stem = os.path.splitext(name)[0] + '.png'
        sr, g = cv2.imread(str(out / stem)), cv2.imread(str(gt / stem))
        assert f['psnr'] == pytest.approx(calculate_psnr(sr, g, 2), abs=1e-9)
        assert f['psnr_y'] == pytest.approx(calculate_psnr(sr, g, 2, test_y_channel=True), abs=1e-9)
    assert report['frames'][0]['tof'] is None and all(f['tof'] > 0 for f in report['frames'][1:])
    assert report['mean']['psnr'] == pytest.approx(np.mean([f['psnr'] for f in report['frames']]))
    assert f'PSNR {report["mean"]["psnr"]:.4f} dB' in cap.out
    for name in ('scores.csv', 'psnr_per_frame.png', 'comparison.png'):
        assert (tmp_path / 'sr_scores' / name).stat().st_size > 0

    few = tmp_path / 'few'
    few.mkdir()
    cv2.imwrite(str(few / '1.png'), np.zeros((144, 160, 3), np.uint8))
    _one_line_error(*_run(['-i', clip, '-o', tmp_path / 'x', *model, '--gt', few], capsys), '1 frames', 'has 5')
    small = tmp_path / 'small_gt'
    small.mkdir()
    for name in NAMES:
        cv2.imwrite(str(small / (os.path.splitext(name)[0] + '.png')), np.zeros((36, 40, 3), np.uint8))
    _one_line_error(*_run(['-i', clip, '-o', tmp_path / 'x', *model, '--gt', small], capsys), '40x36', '160x144')
    assert not (tmp_path / 'x').exists()


def test_tof_is_zero_for_identical_motion_and_grows_with_a_wrong_one():
    from lrti_plugin.scoring import GtScorer

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8), (5, 5), 2)
    moving = [np.roll(base, 2 * i, axis=1) for i in range(3)]
    still = [base] * 3
    same, wrong = GtScorer(['a', 'b', 'c']), GtScorer(['a', 'b', 'c'])
    for i in range(3):
        same.add(moving[i], moving[i], moving[i][::4, ::4])
        wrong.add(still[i], moving[i], still[i][::4, ::4])
    assert same.summary()['tof'] < 1e-6 and wrong.summary()['tof'] > 0.5


def test_scene_cut_resets_the_states_so_shots_do_not_bleed(tmp_path, capsys):
    torch.manual_seed(0)
    ema = LRTIBasicVSR(num_feat=8, num_block=1)
    with torch.no_grad():  # a random net barely uses its states; stronger convolutions make them matter
        for name, p in ema.named_parameters():
            if not name.startswith('spynet') and p.dim() == 4:
                p.mul_(2)
    path = tmp_path / 'stateful.pth'
    torch.save({'params': ema.state_dict()}, path)
    rng = np.random.default_rng(5)
    folder = tmp_path / 'two_shots'
    folder.mkdir()
    shots = []
    for shot in range(2):  # two unrelated shots of 3 frames, each a slowly moving texture
        base = cv2.resize(rng.uniform(0, 255, (9, 10, 3)).astype(np.float32), (40, 36), interpolation=cv2.INTER_CUBIC)
        shots.append([np.clip(np.roll(base, i, axis=1), 0, 255).astype(np.uint8) for i in range(3)])
        for i, img in enumerate(shots[-1]):
            cv2.imwrite(str(folder / f'{shot}{i}.png'), img)
    model = ['--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8', 'num_block=1', '--device', 'cpu']
    code, cap = _run(['-i', folder, '-o', tmp_path / 'cut', *model, '--scene-cut', 30], capsys)
    assert code == 0 and 'states reset at frame(s) 3' in cap.err, cap.err
    code, cap = _run(['-i', folder, '-o', tmp_path / 'nocut', *model], capsys)
    assert code == 0, cap.err
    want = []
    with torch.no_grad():
        for frames in shots:  # each shot on its own, from zero states
            x = torch.from_numpy(np.stack(frames)[..., ::-1].copy()).permute(0, 3, 1, 2).float().div(255)
            want += list(ema.eval()(x.unsqueeze(0))[0].clamp(0, 1).mul(255).round().permute(0, 2, 3, 1).numpy())
    names = [f'{s}{i}.png' for s in range(2) for i in range(3)]
    cut = np.stack([cv2.imread(str(tmp_path / 'cut' / n))[..., ::-1] for n in names]).astype(int)
    nocut = np.stack([cv2.imread(str(tmp_path / 'nocut' / n))[..., ::-1] for n in names]).astype(int)
    assert np.abs(cut - np.stack(want)).max() <= 1
    assert np.abs(nocut - np.stack(want)).max() > 2  # without the reset the shots leak into each other


def test_tiles_through_the_cli(clip, weights, tmp_path, capsys):
    path, ema = weights
    model = ['--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8', 'num_block=1', '--device', 'cpu']
    code, cap = _run(['-i', clip, '-o', tmp_path / 'tiled', *model, '--tile', 34, 34, '--tile-overlap', 0], capsys)
    assert code == 0, cap.err
    want = _expected(ema, clip, [(0, 5)])
    got = np.stack([cv2.imread(str(tmp_path / 'tiled' / (os.path.splitext(n)[0] + '.png'))) for n in NAMES])
    diff = np.abs(got.astype(int) - want.astype(int))
    assert got.shape == want.shape and diff.mean() < 1 and diff.max() > 0  # the same picture, with seams
    _one_line_error(*_run(['-i', clip, '-o', tmp_path / 'x', *model, '--tile', 20, 20, '--tile-overlap', 0], capsys),
                    '>= 33')
    _one_line_error(*_run(['-i', clip, '-o', tmp_path / 'x', *model, '--tile', 30, 30], capsys), 'no core')


def test_a_killed_run_cleans_up_like_ctrl_c(tmp_path, weights):
    import signal
    import subprocess
    import sys
    import time

    path, _ = weights
    src = tmp_path / 'long.mp4'
    _make_video(src, np.random.default_rng(0).integers(0, 256, (60, 36, 40, 3), np.uint8), audio=False)
    temp = tmp_path / 'tmp'
    temp.mkdir()
    out = tmp_path / 'out'
    out.mkdir()
    env = {**os.environ, 'TMPDIR': str(temp)}
    argv = ['-i', str(src), '-o', str(out / 'x4.mp4'), '--arch', 'LRTIBasicVSR', '--weights', str(path),
            '--arch-opt', 'num_feat=8', 'num_block=1', '--device', 'cpu', '--chunk', '2']
    proc = subprocess.Popen([sys.executable, '-m', 'lrti_plugin.infer', *argv], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not any('.partial-' in p for p in os.listdir(out)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 1 and 'interrupted' in err, err
    assert os.listdir(out) == [] and os.listdir(temp) == []  # no output, no partial file, no decoded frames


def test_pad_upscales_frames_below_the_minimum_and_crops_back(tmp_path, weights, capsys):
    path, ema = weights
    small = tmp_path / 'small'
    small.mkdir()
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (20, 24, 3), np.uint8) for _ in range(3)]
    for i, img in enumerate(frames):
        cv2.imwrite(str(small / f'{i}.png'), img)
    model = ['--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8', 'num_block=1', '--device', 'cpu']
    _one_line_error(*_run(['-i', small, '-o', tmp_path / 'x', *model], capsys), '>= 33', '--pad')
    code, cap = _run(['-i', small, '-o', tmp_path / 'sr', *model, '--pad'], capsys)
    assert code == 0, cap.err
    x = torch.from_numpy(np.stack(frames)[..., ::-1].copy()).permute(0, 3, 1, 2).float().div(255)
    x = torch.nn.functional.pad(x, (0, 33 - 24, 0, 33 - 20), mode='replicate')  # edge pixels repeated up to 33
    with torch.no_grad():
        want = ema.eval()(x.unsqueeze(0))[0, :, :, :80, :96].clamp(0, 1).mul(255).round().permute(0, 2, 3, 1).numpy()
    got = np.stack([cv2.imread(str(tmp_path / 'sr' / f'{i}.png'))[..., ::-1] for i in range(3)])
    assert got.shape == (3, 80, 96, 3) and np.abs(got.astype(int) - want).max() <= 1


def test_spill_keeps_the_exact_borders_on_disk_and_cleans_them_up(clip, weights, tmp_path, capsys, monkeypatch):
    from lrti_plugin.archs import streaming
    path, ema = weights
    spill_root = tmp_path / 'tmpdir'
    spill_root.mkdir()
    monkeypatch.setenv('TMPDIR', str(spill_root))
    monkeypatch.setattr(streaming.tempfile, 'tempdir', None)  # re-read TMPDIR
    seen = []
    real_put = streaming.BorderStore.put

    def put(self, name, chunk, border):
        seen.append((self.folder, sorted(os.listdir(self.folder)) if self.folder else None))
        real_put(self, name, chunk, border)

    monkeypatch.setattr(streaming.BorderStore, 'put', put)
    out = tmp_path / 'sr'
    code, cap = _run(['-i', clip, '-o', out, '--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt', 'num_feat=8',
                      'num_block=1', '--chunk', 2, '--device', 'cpu', '--spill'], capsys)
    assert code == 0, cap.err
    assert seen and all(folder and folder.startswith(str(spill_root)) for folder, _ in seen)
    assert any(files for _, files in seen)  # the borders written so far are files there
    assert os.listdir(spill_root) == []  # and the folder is gone afterwards
    want = _expected(ema, clip, [(0, 5)])  # still the whole pass
    for i, name in enumerate(NAMES):
        got = cv2.imread(str(out / (os.path.splitext(name)[0] + '.png')))
        assert np.abs(got.astype(int) - want[i].astype(int)).max() <= 1


def test_progress_starts_with_the_first_sweep_not_the_first_output(clip, weights, tmp_path, capsys, monkeypatch):
    import tqdm as tqdm_module

    path, _ = weights
    bars, at_first_write = [], []

    class Bar(tqdm_module.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    real_write = video_io.PngSink.write

    def write(self, rgb):
        if not at_first_write:
            at_first_write.append(bars[0].n if bars else None)
        real_write(self, rgb)

    monkeypatch.setattr(tqdm_module, 'tqdm', Bar)
    monkeypatch.setattr(video_io.PngSink, 'write', write)
    code, cap = _run(['-i', clip, '-o', tmp_path / 'sr', '--arch', 'LRTIBasicVSR', '--weights', path, '--arch-opt',
                      'num_feat=8', 'num_block=1', '--chunk', 2, '--device', 'cpu'], capsys)
    assert code == 0, cap.err
    assert len(bars) == 1 and bars[0].total == 10 and bars[0].n == 10  # 5 frames x 2 sweeps (exact, BasicVSR)
    assert at_first_write == [5 + 2]  # the whole backward sweep and the forward sweep's first chunk (2 frames)


def test_presentation_pts_keeps_good_timestamps_sorts_permuted_ones_and_retimes_broken_ones():
    from fractions import Fraction

    tb = Fraction(1, 1000)
    assert video_io.presentation_pts([0, 40, 80], tb, Fraction(25)) == [0, 40, 80]
    with pytest.warns(UserWarning, match='out of order'):
        assert video_io.presentation_pts([0, 80, 40, 120], tb, Fraction(25)) == [0, 40, 80, 120]
    with pytest.warns(UserWarning, match='re-timed at 25.000'):
        assert video_io.presentation_pts([0, None, 0], tb, Fraction(25)) == [0, 40, 80]


BOX = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'videos', 'opencv-doc', 'box.mp4')


@pytest.mark.skipif(not os.path.isfile(BOX), reason='needs ../shared/data/videos/opencv-doc/box.mp4')
def test_a_real_phone_video_with_decode_order_timestamps_and_mp3_audio_is_written(tmp_path):
    """box.mp4 labels its frames with decode-order timestamps (0, 101000, 67000, ...): the encoder refused them."""
    import av

    with pytest.warns(UserWarning, match='out of order'):
        src = video_io.open_source(BOX, 30)
    sink = video_io.VideoSink(str(tmp_path / 'out.mp4'), src)
    for _ in range(len(src)):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    out = sink.close()
    with av.open(out) as c:
        v = c.streams.video[0]
        pts = [f.pts * v.time_base for f in c.decode(video=0)]
    with av.open(BOX) as c:
        want = sorted(f.pts for f in c.decode(video=0))[:30]
        tb = c.streams.video[0].time_base
    assert len(pts) == 30 and all(b > a for a, b in zip(pts, pts[1:]))
    assert max(abs(float(a - b * tb)) for a, b in zip(pts, want)) < 0.5 / 29.97  # half a frame (muxer rounding)
    with av.open(out) as c:
        assert [s.codec_context.name for s in c.streams if s.type == 'audio'] == ['mp3float']
    src.close()


def test_the_cli_keeps_freed_host_memory(clip, weights, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(infer, 'keep_freed_memory', lambda: calls.append('called') or True)  # not this process's
    code, cap = _run(['-i', clip, '-o', tmp_path / 'sr', '--arch', 'LRTIBasicVSR', '--weights', weights[0],
                      '--arch-opt', 'num_feat=8', 'num_block=1', '--mode', 'whole', '--device', 'cpu'], capsys)
    assert code == 0, cap.err
    assert calls == ['called']
