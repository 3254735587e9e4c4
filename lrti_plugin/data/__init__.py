"""Datasets. Each module registers its classes into BasicSR's ``DATASET_REGISTRY`` when imported."""
