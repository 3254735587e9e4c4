"""Frames in and out of :mod:`lrti_plugin.infer`: frame folders, globs and video files (PyAV).

Sources give random access to uint8 RGB frames (``read(start, stop)`` -> (n, H, W, 3)), which exact
streaming needs (one sweep per branch, some backwards). A video is decoded once, in order, into a temporary
folder of raw frames, so memory stays bounded whatever the video's length; its frame timestamps, frame
rate and time base are kept for the output.

Sinks take SR frames in time order: a folder of PNGs named after the input frames, or a video file
(H.264 through PyAV's bundled libx264, ``crf`` quality, yuv420p tagged BT.709, the source's frame
timestamps, time base and frame rate, and its audio and subtitle streams copied packet for packet,
interleaved as the video is written). Both write under a temporary name and are renamed by
:func:`commit` when complete, so an interrupted run never leaves an output that looks finished.
"""
import glob
import os
import shutil
import tempfile
import warnings
from fractions import Fraction
from typing import Iterator, List, Optional

import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.mov', '.avi', '.webm', '.m4v', '.mpg', '.mpeg', '.ts', '.flv', '.wmv')


class MediaError(Exception):
    """A bad input or output, named in its message (one line)."""


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def open_source(source: str, max_frames: Optional[int] = None, workdir: Optional[str] = None):
    """A :class:`FrameFolder` (folder or glob) or a :class:`VideoFrames` (a video file)."""
    if os.path.isfile(source):
        if not is_video(source):
            raise MediaError(f'{source}: not a video file ({", ".join(VIDEO_EXTENSIONS)}) nor a folder of frames')
        return VideoFrames(source, max_frames, workdir)
    return FrameFolder(list_frames(source)[:max_frames or None])


def list_frames(source: str) -> List[str]:
    """The frame files of a folder (sorted by name; any non-image file is an error) or of a glob pattern."""
    if os.path.isdir(source):
        names = sorted(os.listdir(source))
        others = [n for n in names if not n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith('.')]
        if others:
            raise MediaError(f'{source}: not an image file: {others[0]!r} (frames: {", ".join(IMAGE_EXTENSIONS)})')
        paths = [os.path.join(source, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    elif any(ch in source for ch in '*?['):
        paths = sorted(p for p in glob.glob(source) if p.lower().endswith(IMAGE_EXTENSIONS))
    else:
        raise MediaError(f'{source}: no such file or folder (give a video, a folder of frames or a quoted glob)')
    if not paths:
        raise MediaError(f'{source}: no frames found')
    return paths


def _read_image(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f'{path}: unreadable image')
    return np.ascontiguousarray(img[:, :, ::-1])  # (H, W, 3) RGB


class FrameFolder:
    """Frames from image files, read on demand; every frame must have the first frame's size."""

    def __init__(self, paths: List[str]):
        self.paths = paths
        self.names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        first = _read_image(paths[0])
        self.size = first.shape[:2]  # (H, W)
        self.video = None

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, start: int, stop: int) -> np.ndarray:
        """(n, H, W, 3) uint8 RGB frames start .. stop-1."""
        frames = []
        for path in self.paths[start:stop]:
            img = _read_image(path)
            if img.shape[:2] != self.size:
                raise MediaError(f'{path}: {img.shape[1]}x{img.shape[0]}, but {self.paths[0]} is '
                                 f'{self.size[1]}x{self.size[0]} (all frames must have one size)')
            frames.append(img)
        return np.stack(frames)

    def check_all(self) -> None:
        """Read every frame once (so a bad frame fails before any work)."""
        for i in range(len(self)):
            self.read(i, i + 1)

    def close(self) -> None:
        pass


def presentation_pts(pts: List[Optional[int]], time_base, rate, path: str = 'the video') -> List[int]:
    """Timestamps for frames in the order the decoder gave them (presentation order), strictly increasing.

    Most files give them as they are. Some (e.g. a muxer that wrote decode-order timestamps) give a permutation:
    the frames are in order but their labels are not, and an encoder refuses them. Then the sorted timestamps are
    used. Missing or repeated ones: the frames are re-timed at ``rate`` (25 frames/s if unknown)."""
    if all(p is not None for p in pts):
        if all(b > a for a, b in zip(pts, pts[1:])):
            return list(pts)
        if len(set(pts)) == len(pts):
            warnings.warn(f'{path}: frame timestamps out of order; the frames keep their order and take the '
                          'timestamps sorted', stacklevel=3)
            return sorted(pts)
    step = 1 / (Fraction(rate) if rate else Fraction(25)) / Fraction(time_base)
    fps = float(1 / (step * time_base))
    warnings.warn(f'{path}: missing or repeated frame timestamps; frames re-timed at {fps:.3f} frames/s', stacklevel=3)
    return [round(i * step) for i in range(len(pts))]


class VideoFrames:
    """A video file decoded once into a temporary folder of raw frames (random access, bounded memory).

    Attributes:
        path (str): the video.
        size (tuple): (H, W).
        pts (list[int | None]): each frame's timestamp in ``time_base``.
        time_base (Fraction), rate (Fraction | None): of the video stream.
    """

    def __init__(self, path: str, max_frames: Optional[int] = None, workdir: Optional[str] = None):
        import av

        self.path = path
        self.video = path
        self._dir = tempfile.mkdtemp(prefix='lrti_frames_', dir=workdir)
        self.pts: List[Optional[int]] = []
        self.complete = True  # False when max_frames cut the video short
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise MediaError(f'{path}: no video frames (the file has no video stream)')
                stream = container.streams.video[0]
                self.time_base = stream.time_base
                self.rate = stream.average_rate or stream.guessed_rate
                extra: List[Optional[int]] = []  # timestamps of up to 16 frames after a cut (see presentation_pts)
                for frame in container.decode(stream):
                    if max_frames and len(self.pts) >= max_frames:
                        self.complete = False
                        extra.append(frame.pts)
                        if len(extra) >= 16:
                            break
                        continue
                    rgb = frame.to_ndarray(format='rgb24')  # (H, W, 3)
                    np.save(os.path.join(self._dir, f'{len(self.pts)}.npy'), rgb)
                    self.pts.append(frame.pts)
        except av.FFmpegError as err:
            self.close()
            raise MediaError(f'{path}: cannot decode ({" ".join(str(err).split())})') from None
        except BaseException:
            self.close()
            raise
        if not self.pts:
            self.close()
            raise MediaError(f'{path}: no video frames (the video stream is empty)')
        self.pts = presentation_pts(self.pts + extra, self.time_base, self.rate, path)[:len(self.pts)]
        self.size = np.load(os.path.join(self._dir, '0.npy'), mmap_mode='r').shape[:2]
        digits = len(str(len(self.pts) - 1))
        self.names = [f'{i:0{max(digits, 6)}d}' for i in range(len(self.pts))]

    def __len__(self) -> int:
        return len(self.pts)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.stack([np.load(os.path.join(self._dir, f'{i}.npy')) for i in range(start, stop)])

    def check_all(self) -> None:
        pass  # decoding already read every frame

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


class PngSink:
    """SR frames as PNGs named after the input frames, in a hidden temporary folder beside ``out``."""

    def __init__(self, out: str, names: List[str]):
        parent = os.path.dirname(os.path.abspath(out))
        self.out, self.names = out, names
        self.tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(out))}.partial-', dir=parent)
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        """One (sH, sW, 3) uint8 RGB frame."""
        import cv2

        path = os.path.join(self.tmp, self.names[self.count] + '.png')
        if not cv2.imwrite(path, rgb[:, :, ::-1]):
            raise MediaError(f'{path}: could not write')
        self.count += 1

    def close(self) -> str:
        return self.tmp

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class VideoSink:
    """SR frames as an H.264 video (see the module docstring), written to a temporary file beside ``out``.

    Args:
        out (str): the video to write (its extension picks the container).
        source (VideoFrames | None): the input video: its timestamps, time base, frame rate, audio and
            subtitle streams are kept. For frame input, ``fps`` gives the rate.
        fps (float): frame rate when there is no source video. Default: 25.
        crf (int): libx264 constant rate factor (0 lossless, 18 visually lossless, 23 default). Default: 18.
    """

    def __init__(self, out: str, source=None, fps: float = 25, crf: int = 18):
        import av

        parent = os.path.dirname(os.path.abspath(out))
        ext = os.path.splitext(out)[1]
        fd, self.tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(out)}.partial-', suffix=ext, dir=parent)
        os.close(fd)
        try:  # an interrupt (Ctrl-C, SIGTERM) while opening must not leave the partial file behind
            self.source = source if isinstance(source, VideoFrames) else None
            self.container = av.open(self.tmp, mode='w')
            rate = self.source.rate if self.source is not None and self.source.rate else None
            rate = rate or Fraction(fps).limit_denominator(1001)
            self.stream = self.container.add_stream('libx264', rate=rate)
            self.stream.pix_fmt = 'yuv420p'
            self.stream.options = {'crf': str(crf)}
            if self.source is not None:
                self.stream.time_base = self.source.time_base
            else:
                self.stream.time_base = 1 / rate
            ctx = self.stream.codec_context
            ctx.color_primaries, ctx.color_trc, ctx.colorspace = 1, 1, 1  # BT.709 (ITU-T H.273 code points)
            ctx.color_range = 1  # limited ("tv") range, what yuv420p players expect
            self._copied = self._open_copies()
            self.count = 0
        except BaseException:
            os.remove(self.tmp)
            raise

    def _open_copies(self):
        """Audio and subtitle streams of the source, remuxed as the video advances: (demuxer, packets, map)."""
        import av

        if self.source is None:
            return None
        src = av.open(self.source.path)
        mapping = {}
        for s in src.streams:
            if s.type not in ('audio', 'subtitle'):
                continue
            try:
                mapping[s.index] = self.container.add_stream_from_template(s)
            except (ValueError, av.FFmpegError) as err:  # e.g. a subtitle codec the container cannot hold
                warnings.warn(f'{s.type} stream {s.index} ({s.codec_context.name}) of {self.source.path} not '
                              f'copied: {err}', stacklevel=2)
        if not mapping:
            src.close()
            return None
        return src, src.demux(*[src.streams[i] for i in mapping]), mapping, []

    def _mux_copies(self, until: Optional[float]) -> None:
        """Copy source packets up to time ``until`` seconds (all of them when None)."""
        if self._copied is None:
            return
        src, packets, mapping, pending = self._copied
        while True:
            if not pending:
                packet = next(packets, None)
                if packet is None:
                    return
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's flush packet
                pending.append(packet)
            packet = pending[0]
            when = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
            if until is not None and when >= until:
                return
            pending.pop(0)
            packet.stream = mapping[packet.stream.index]
            self.container.mux(packet)

    def write(self, rgb: np.ndarray) -> None:
        import av

        if self.count == 0:  # the codec opens on the first frame: its size is the SR size
            self.stream.width, self.stream.height = rgb.shape[1], rgb.shape[0]
        frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
        frame = frame.reformat(format='yuv420p', dst_colorspace='ITU709')
        if self.source is not None and self.source.pts[self.count] is not None:
            frame.pts = self.source.pts[self.count]
        else:
            frame.pts = self.count
        frame.time_base = self.stream.time_base
        self._mux_copies(float(frame.pts * self.stream.time_base))
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> str:
        for packet in self.stream.encode():
            self.container.mux(packet)
        end = None  # all of the audio; only up to the last frame when --max-frames cut the video
        if self.source is not None and not self.source.complete and self.source.pts[-1] is not None:
            end = float(self.source.pts[-1] * self.source.time_base + (1 / self.source.rate if self.source.rate else 0))
        self._mux_copies(end)
        self.container.close()
        if self._copied is not None:
            self._copied[0].close()
        return self.tmp

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 (already failing: the partial file is removed below)
            pass
        if self._copied is not None:
            self._copied[0].close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def scene_cuts(source, threshold: float) -> List[int]:
    """Frame indices where a new shot starts: the mean absolute difference of consecutive grey frames
    (downscaled to 64 pixels wide, 0..255) is above ``threshold``. One pass, two frames in memory.

    Measured on real footage: hand-held shots stay below 10 (two hand-held phone videos: at most 9.7, 99th
    percentile 2.3 and 5.2), cuts between unrelated shots gave 61 to 85; 30 sits between them.
    ``threshold <= 0`` finds none."""
    import cv2

    if threshold <= 0:
        return []
    cuts, prev = [], None
    for i in range(len(source)):
        frame = source.read(i, i + 1)[0]
        h, w = frame.shape[:2]
        small = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (64, max(1, round(64 * h / w))),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        if prev is not None and float(np.abs(small - prev).mean()) > threshold:
            cuts.append(i)
        prev = small
    return cuts


def commit(tmp: str, out: str) -> None:
    """Replace ``out`` (if any) by the finished ``tmp``."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    elif os.path.exists(out):
        os.remove(out)
    os.replace(tmp, out)


def iter_rgb(sr) -> Iterator[np.ndarray]:
    """(1, n, 3, sH, sW) float SR frames -> n (sH, sW, 3) uint8 RGB arrays (rounded as BasicSR's tensor2img)."""
    frames = sr[0].float().clamp(0, 1).mul(255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    yield from frames
