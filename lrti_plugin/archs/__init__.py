"""Networks. Each module registers its classes into BasicSR's ``ARCH_REGISTRY`` when imported."""
from . import basicvsr_arch  # noqa: F401,I001  (one line per module, so engineers can add theirs)
from . import basicvsrpp_arch  # noqa: F401
from . import lrti_vsr_arch  # noqa: F401
from . import ritb_arch  # noqa: F401
