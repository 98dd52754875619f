"""A correct tokenizer for SentencePiece-style ("llama" model) GGUF vocabularies such as Gemma 3's.

Why this exists: the tokenizer transformers builds from the Gemma-3-270M GGUF is wrong in some
releases (5.17 splits "Paris is the capital" into ``Par, is, ▁is, ▁t, he, ...`` and adds no BOS).
The GGUF holds everything needed to rebuild it: the pieces, their scores (higher = merged earlier)
and their types (1 normal, 3 control, 4 user-defined, 6 byte).

Decisions:
- SentencePiece BPE semantics, built as a ``tokenizers`` BPE model: merges are derived from the
  scores (a pair (a, b) may merge when a+b is a normal piece; the merged piece's score orders it),
  byte fallback through the ``<0xNN>`` pieces, spaces become "▁", no dummy prefix (the GGUF says
  ``add_space_prefix = False``), BOS first when the GGUF asks for it.
- Control pieces are special tokens; user-defined pieces (runs of newlines/spaces) are added tokens
  matched on the raw text, as SentencePiece matches user-defined symbols.
- Reading the GGUF uses the ``gguf`` package (the embedded extra). The built tokenizer is saved with
  the converted weights, so later runs need neither the GGUF nor ``gguf``.
"""

from __future__ import annotations

from pathlib import Path

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_BYTE = 1, 3, 4, 6


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    return field


def _scalar(reader, key: str, default=None):
    field = _field(reader, key)
    if field is None:
        return default
    value = field.parts[field.data[0]]
    if field.types[0].name == "STRING":
        return bytes(value).decode("utf-8")
    return value.tolist()[0]


def read_spm_vocab(gguf_path: str | Path) -> dict:
    """Pieces, scores, types and special ids of a SentencePiece-style GGUF vocabulary."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    model = _scalar(reader, "tokenizer.ggml.model")
    if model != "llama":
        raise ValueError(f"{gguf_path}: tokenizer.ggml.model is {model!r}, expected 'llama' (SentencePiece)")
    tokens_f = _field(reader, "tokenizer.ggml.tokens")
    scores_f = _field(reader, "tokenizer.ggml.scores")
    types_f = _field(reader, "tokenizer.ggml.token_type")
    pieces = [bytes(tokens_f.parts[i]).decode("utf-8") for i in tokens_f.data]
    scores = [float(scores_f.parts[i][0]) for i in scores_f.data]
    types = [int(types_f.parts[i][0]) for i in types_f.data]
    return {
        "pieces": pieces,
        "scores": scores,
        "types": types,
        "bos_id": _scalar(reader, "tokenizer.ggml.bos_token_id"),
        "eos_id": _scalar(reader, "tokenizer.ggml.eos_token_id"),
        "unk_id": _scalar(reader, "tokenizer.ggml.unknown_token_id"),
        "pad_id": _scalar(reader, "tokenizer.ggml.padding_token_id"),
        "add_bos": bool(_scalar(reader, "tokenizer.ggml.add_bos_token", True)),
        "add_space_prefix": bool(_scalar(reader, "tokenizer.ggml.add_space_prefix", True)),
    }


def _merges_from_scores(pieces: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Every (left, right) split of a normal piece whose halves are pieces, ordered by the merged
    piece's score (desc), then by the halves' ids — the order SentencePiece BPE applies them."""
    vocab = {p: i for i, p in enumerate(pieces) if types[i] in (TOKEN_NORMAL, TOKEN_BYTE)}
    candidates = []
    for merged, idx in vocab.items():
        if types[idx] != TOKEN_NORMAL or len(merged) < 2:
            continue
        for cut in range(1, len(merged)):
            left, right = merged[:cut], merged[cut:]
            li, ri = vocab.get(left), vocab.get(right)
            if li is not None and ri is not None:
                candidates.append((-scores[idx], idx, li, ri, left, right))
    candidates.sort()
    return [(c[4], c[5]) for c in candidates]


def build_spm_tokenizer(vocab: dict):
    """A ``PreTrainedTokenizerFast`` reproducing SentencePiece BPE for this vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    pieces, scores, types = vocab["pieces"], vocab["scores"], vocab["types"]
    token_to_id = {p: i for i, p in enumerate(pieces)}
    unk = pieces[vocab["unk_id"]]
    model = BPE(
        vocab=token_to_id,
        merges=_merges_from_scores(pieces, scores, types),
        unk_token=unk,
        fuse_unk=True,
        byte_fallback=True,
        ignore_merges=False,
    )
    tok = Tokenizer(model)
    norms = [normalizers.Replace(" ", "▁")]
    if vocab["add_space_prefix"]:
        norms.insert(0, normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = None
    decs = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab["add_space_prefix"]:
        decs.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(decs)
    tok.add_special_tokens(
        [AddedToken(p, special=True, normalized=False) for p, t in zip(pieces, types) if t == TOKEN_CONTROL]
    )
    tok.add_tokens(
        [AddedToken(p, special=False, normalized=False) for p, t in zip(pieces, types) if t == TOKEN_USER_DEFINED]
    )
    bos = pieces[vocab["bos_id"]]
    if vocab["add_bos"]:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab["bos_id"])]
        )
    pad_id = vocab["pad_id"] if vocab["pad_id"] is not None else vocab["eos_id"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=pieces[vocab["eos_id"]],
        unk_token=unk,
        pad_token=pieces[pad_id],
        padding_side="left",
        add_bos_token=vocab["add_bos"],
    )


def load_gguf_spm_tokenizer(gguf_path: str | Path):
    return build_spm_tokenizer(read_spm_vocab(gguf_path))
