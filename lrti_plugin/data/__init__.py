"""Datasets. Each module registers its classes into BasicSR's ``DATASET_REGISTRY`` when imported."""
from . import recurrent_dataset  # noqa: F401,I001  (one line per module, so engineers can add theirs)
from . import video_test_dataset  # noqa: F401
from . import long_clip_dataset  # noqa: F401
