"""The temporal transformer encoder and its building blocks."""

from .encoder import EncoderConfig, EncoderOutput, Patched, TemporalEncoder, tap_name

__all__ = ["EncoderConfig", "EncoderOutput", "Patched", "TemporalEncoder", "tap_name"]
