"""Demo clips made from the real photos that scikit-image ships: no download, no external data.

Each clip is a window sliding over one photo along a smooth random trajectory with sub-pixel steps,
a slight rotation and zoom, so consecutive frames carry the sub-pixel information a recurrent VSR
model exploits. Frames are rendered from the full-resolution photo (Lanczos), written in BasicSR's
REDS layout ``<root>/<clip>/<frame:08d>.png``.
"""
import os
from dataclasses import dataclass

import cv2
import numpy as np

# Photos bundled inside scikit-image's wheel (no pooch download). Train and held-out sets never share a photo.
TRAIN_PHOTOS = ('astronaut', 'coffee', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'retina')
HELDOUT_PHOTOS = ('chelsea', 'camera')
# The validation split: settings of the demo are chosen on these, never on the held-out photos.
VAL_PHOTOS = ('coins', 'brick')


@dataclass(frozen=True)
class ClipSpec:
    """What one demo clip is made of (every field is recorded in the clip's name or the demo report)."""

    photo: str
    num_frames: int
    height: int
    width: int
    seed: int


def load_photo(name: str) -> np.ndarray:
    """Return a scikit-image sample photo as an RGB uint8 array (H, W, 3); grey photos are replicated."""
    import skimage.data

    try:
        img = getattr(skimage.data, name)()
    except AttributeError as err:
        raise ValueError(f'photo: scikit-image has no sample photo {name!r}') from err
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _trajectory(rng: np.random.Generator, num_frames: int, room: float) -> np.ndarray:
    """Per-frame (dx, dy, angle_deg, zoom) of a smooth camera path, shape (T, 4); |dx|, |dy| <= room.

    A path that would leave the room is shrunk as a whole (slower motion), never clipped: a clipped path
    would stand still at the border for the rest of the clip."""
    velocity = rng.uniform(-1.0, 1.0, size=2)
    velocity *= rng.uniform(0.4, 1.6) / max(np.linalg.norm(velocity), 1e-6)  # 0.4-1.6 px/frame, sub-pixel
    accel = rng.normal(0.0, 0.05, size=2)
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    xy = velocity * t + 0.5 * accel * t**2
    xy -= xy.mean(axis=0)
    reach = float(np.abs(xy).max())
    if reach > room:
        xy *= room / reach
    angle = np.linspace(0.0, rng.uniform(-2.0, 2.0), num_frames)
    zoom = np.linspace(1.0, rng.uniform(0.97, 1.03), num_frames)
    return np.concatenate([xy, angle[:, None], zoom[:, None]], axis=1)


def render_clip(spec: ClipSpec) -> list[np.ndarray]:
    """Render the frames of one clip as RGB uint8 arrays (height, width, 3)."""
    photo = load_photo(spec.photo)
    ph, pw = photo.shape[:2]
    if ph < spec.height + 16 or pw < spec.width + 16:
        raise ValueError(f'photo {spec.photo!r} ({ph}x{pw}) is too small for {spec.height}x{spec.width} frames')
    rng = np.random.default_rng(spec.seed)
    room = min(ph - spec.height, pw - spec.width) / 4.0
    # A random window centre that leaves room for the motion on every side.
    cy = rng.uniform(spec.height / 2 + room, ph - spec.height / 2 - room)
    cx = rng.uniform(spec.width / 2 + room, pw - spec.width / 2 - room)
    frames = []
    for dx, dy, angle, zoom in _trajectory(rng, spec.num_frames, room):
        # Affine map taking the window's centre (cx+dx, cy+dy) to the frame's centre.
        m = cv2.getRotationMatrix2D((cx + dx, cy + dy), angle, zoom)
        m[0, 2] += spec.width / 2 - (cx + dx)
        m[1, 2] += spec.height / 2 - (cy + dy)
        frame = cv2.warpAffine(photo, m, (spec.width, spec.height), flags=cv2.INTER_LANCZOS4,
                               borderMode=cv2.BORDER_REFLECT101)
        frames.append(frame)
    return frames


def write_clips(root: str, specs: dict[str, ClipSpec]) -> dict[str, int]:
    """Write each clip to ``root/<name>/<frame:08d>.png``; returns {clip name: number of frames}.

    Raises:
        FileExistsError: if a clip folder already exists (nothing is overwritten).
    """
    for name in specs:
        if os.path.exists(os.path.join(root, name)):
            raise FileExistsError(f'demo clip folder already exists: {os.path.join(root, name)}')
    counts = {}
    for name, spec in specs.items():
        folder = os.path.join(root, name)
        os.makedirs(folder)
        frames = render_clip(spec)
        for i, frame in enumerate(frames):
            if not cv2.imwrite(os.path.join(folder, f'{i:08d}.png'), frame[..., ::-1]):
                raise OSError(f'could not write {os.path.join(folder, f"{i:08d}.png")}')
        counts[name] = len(frames)
    return counts


def demo_specs(num_frames: int = 32, heldout_frames: int = 48, height: int = 256, width: int = 320,
               clips_per_photo: int = 2, seed: int = 0) -> dict[str, dict[str, ClipSpec]]:
    """The default demo clips, per split (``train``, ``heldout``, ``val``), keyed by clip name.

    Training clips come from :data:`TRAIN_PHOTOS`, held-out clips (the report) from :data:`HELDOUT_PHOTOS`,
    validation clips (choosing settings) from :data:`VAL_PHOTOS`; no photo is in two splits.
    """
    train = {
        f'{photo}_{k}': ClipSpec(photo, num_frames, height, width, seed * 1000 + 10 * i + k)
        for i, photo in enumerate(TRAIN_PHOTOS) for k in range(clips_per_photo)
    }
    heldout = {
        photo: ClipSpec(photo, heldout_frames, height, width, seed * 1000 + 500 + i)
        for i, photo in enumerate(HELDOUT_PHOTOS)
    }
    val = {
        photo: ClipSpec(photo, heldout_frames, height, width, seed * 1000 + 700 + i)
        for i, photo in enumerate(VAL_PHOTOS)
    }
    return {'train': train, 'heldout': heldout, 'val': val}


def motion_magnitude(frames: list[np.ndarray]) -> float:
    """Mean absolute difference between consecutive frames (grey levels): 0 for a static clip."""
    diffs = [np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() for a, b in zip(frames, frames[1:])]
    return float(np.mean(diffs)) if diffs else 0.0

