"""Networks. Each module registers its classes into BasicSR's ``ARCH_REGISTRY`` when imported."""
