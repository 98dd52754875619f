"""LatentWire runtime: models, translator, protocols and generation.

Sender: ``load_model`` (source) -> ``encode_source`` -> ``BottleneckedGatedTranslator`` -> soft
tokens. Wire: ``encode`` / ``decode`` pack soft tokens (or bottleneck latents) into checked packets
(docs/wire.md); a bad packet raises a ``WireFormatError``, whose subclasses naming each fault live in
``lw_runtime.wire``. Receiver: ``generate`` feeds soft tokens (and optional text) to the frozen target.
"""

from .generate import SoftTokenError, generate, stream
from .packets import Decoder, decode, encode, encode_soft_tokens
from .models import EMBEDDED_SOURCE, EMBEDDED_TARGET, LoadedModel, ModelLoadError, load_model
from .source import EmptyTextError, encode_source
from .translator import BottleneckedGatedTranslator, TranslatorConfig, TranslatorMismatchError
from .wire import WireFormatError, message_bytes, translator_fingerprint

__all__ = [
    "Decoder",
    "WireFormatError",
    "decode",
    "encode",
    "encode_soft_tokens",
    "message_bytes",
    "translator_fingerprint",
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
    "stream",
    "load_model",
]
