"""Attention taps: explicit attention forwards and recorders of S = Q·Kᵀ and O = A·V."""
from .explicit import (UnsupportedAttentionError, make_attention_explicit,
                       register_attention_adapter, supported_attention_classes)
from .recorder import AttentionRecord, AttentionRecorder, emit, group_records

__all__ = [
    'AttentionRecord', 'AttentionRecorder', 'UnsupportedAttentionError', 'emit',
    'group_records', 'make_attention_explicit', 'register_attention_adapter',
    'supported_attention_classes'
]
