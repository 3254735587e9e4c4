"""Helpers for options files (not registered anywhere)."""
