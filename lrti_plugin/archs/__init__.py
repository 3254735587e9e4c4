"""Networks. Each module registers its classes into BasicSR's ``ARCH_REGISTRY`` when imported."""
from . import basicvsr_arch, basicvsrpp_arch, lrti_vsr_arch, ritb_arch  # noqa: F401
