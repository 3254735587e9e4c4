"""Helpers for options files and reports (not registered anywhere)."""
