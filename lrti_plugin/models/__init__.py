"""Models. Each module registers its classes into BasicSR's ``MODEL_REGISTRY`` when imported."""
from . import lrti_model  # noqa: F401
