"""Networks. Each module registers its classes into BasicSR's ``ARCH_REGISTRY`` when imported."""
from . import ritb_arch  # noqa: F401
