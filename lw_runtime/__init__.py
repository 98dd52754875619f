"""LatentWire runtime: models, translator, protocols and generation.

Sender: ``load_model`` (source) -> ``encode_source`` -> ``BottleneckedGatedTranslator`` -> soft
tokens. Receiver: ``generate`` feeds soft tokens (and optional text) to the frozen target.
"""

from .generate import SoftTokenError, generate
from .models import EMBEDDED_SOURCE, EMBEDDED_TARGET, LoadedModel, ModelLoadError, load_model
from .source import EmptyTextError, encode_source
from .translator import BottleneckedGatedTranslator, TranslatorConfig, TranslatorMismatchError

__all__ = [
    "EMBEDDED_SOURCE",
    "EMBEDDED_TARGET",
    "BottleneckedGatedTranslator",
    "EmptyTextError",
    "LoadedModel",
    "ModelLoadError",
    "SoftTokenError",
    "TranslatorConfig",
    "TranslatorMismatchError",
    "encode_source",
    "generate",
    "load_model",
]
