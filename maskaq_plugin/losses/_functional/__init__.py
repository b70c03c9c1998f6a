"""Implementation of :mod:`maskaq_plugin.losses.functional` (import from there)."""
