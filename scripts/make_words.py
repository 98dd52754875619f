"""Regenerate lw_runtime/data/words.txt, the training-only wide answer vocabulary (``--wide-answers``).

The list is every word that is one whole-word token (a leading-space token: "Ġword" / "▁word") in
both embedded models' vocabularies, SmolLM2-135M-Instruct and Gemma-3-270M: lowercase words of
4-12 letters and capitalised ones of 4-12 letters (names of places, people and things). Being a
single token in two independently trained vocabularies makes a string very likely a real word, and
a fact about it is a fair thing to relay. Pool values of the validation and test splits are removed
when the list is read (pools.wide_words), not here, so the file does not change when a pool does.

Usage: python scripts/make_words.py SMOLLM2_TOKENIZER_DIR GEMMA_TOKENIZER_DIR
(the converted model folders in ~/.cache/latentwire/converted/ hold both tokenizers).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from transformers import AutoTokenizer

WORD = re.compile(r"[a-z]{4,12}|[A-Z][a-z]{3,11}")
OUT = Path(__file__).resolve().parent.parent / "lw_runtime" / "data" / "words.txt"


def whole_words(vocab, marker: str) -> set[str]:
    return {t[len(marker):] for t in vocab if t.startswith(marker) and WORD.fullmatch(t[len(marker):])}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    smol = whole_words(AutoTokenizer.from_pretrained(argv[0]).get_vocab(), "Ġ")
    gemma = whole_words(AutoTokenizer.from_pretrained(argv[1]).get_vocab(), "▁")
    words = sorted(smol & gemma)
    OUT.write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} words ({len(smol)} SmolLM2, {len(gemma)} Gemma) -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
