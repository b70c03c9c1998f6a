"""OpenMMLab engine pieces: hooks."""
from . import hooks  # noqa: F401
