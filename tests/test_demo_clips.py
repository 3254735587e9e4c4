"""The demo's clip rendering (lrti_demo.clips): camera paths that never stop, splits that share no photo."""
import numpy as np

from lrti_demo import clips


def test_camera_path_stays_in_the_room_and_never_stops():
    for seed in range(30):
        path = clips._trajectory(np.random.default_rng(seed), 48, room=11.0)  # chelsea's room at 256x320
        xy = path[:, :2]
        assert np.abs(xy).max() <= 11.0 + 1e-9
        steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        assert steps.min() > 1e-3, f'seed {seed}: the camera stands still for {int((steps < 1e-3).sum())} steps'


def test_splits_share_no_photo_and_have_the_requested_lengths():
    specs = clips.demo_specs(num_frames=32, heldout_frames=48)
    photos = {split: {s.photo for s in v.values()} for split, v in specs.items()}
    assert not photos['train'] & photos['heldout'] and not photos['train'] & photos['val']
    assert not photos['heldout'] & photos['val']
    assert {s.num_frames for s in specs['train'].values()} == {32}
    assert {s.num_frames for s in [*specs['heldout'].values(), *specs['val'].values()]} == {48}
