"""Regenerate the training-only wide answer vocabularies in train/data/ (``--wide-answers``).

``words.txt``: every word that is one whole-word token (a leading-space token: "Ġword" / "▁word") in
both embedded models' vocabularies, SmolLM2-135M-Instruct and Gemma-3-270M: lowercase words of
4-12 letters and capitalised ones of 4-12 letters (names of places, people and things). Being a
single token in two independently trained vocabularies makes a string very likely a real word, and
a fact about it is a fair thing to relay.

``words_multi.txt`` (``--multi-words``): real English words that SmolLM2 splits into 2-4 pieces. The
held-out values a translator misses are mostly such words (" can"+"ary", " Ut"+"re"+"cht"): in
session 8's analysis (results/quality/README.md, quality_report.py --pieces) the better 1-fact runs
relayed one-token held-out words 85-98% of the time and one-word answers of two tokens 36-58%, while
``words.txt`` trains only on one-token words. Source: the 200,000 most frequent English
words of ``wordfreq`` (3.1.1; a dev-time tool, not a runtime dependency: ``pip install wordfreq``)
with Zipf frequency >= 2.5 and 4-12 letters a-z, without the words of ``blocked_words.txt``; a word
is written capitalised when that form is fewer tokens in either model (names and places come out as
"Utrecht", and so do some common words, e.g. "Aberration": a fifth of the list is capitalised).

Pool values of the validation and test splits are removed when a list is read (pools.wide_words,
pools.multi_words), not here, so the files do not change when a pool does.

Usage: python scripts/make_words.py SMOLLM2_TOKENIZER_DIR GEMMA_TOKENIZER_DIR
(the converted model folders in ~/.cache/latentwire/converted/ hold both tokenizers).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.data.pools import blocked_words  # noqa: E402
from lw_runtime.protocols import answer_continuation  # noqa: E402

WORD = re.compile(r"[a-z]{4,12}|[A-Z][a-z]{3,11}")
LOWER = re.compile(r"[a-z]{4,12}")
DATA = Path(__file__).resolve().parent.parent / "train" / "data"
MIN_ZIPF, TOP_N, PIECES = 2.5, 200_000, (2, 4)


def whole_words(vocab, marker: str) -> set[str]:
    return {t[len(marker):] for t in vocab if t.startswith(marker) and WORD.fullmatch(t[len(marker):])}


def multi_piece_words(smol, gemma) -> list[str]:
    try:
        from wordfreq import top_n_list, zipf_frequency
    except ImportError as err:
        raise SystemExit("words_multi.txt needs wordfreq (a dev-time tool): pip install wordfreq==3.1.1") from err

    def pieces(tokenizer, word: str) -> int:  # as the target writes it after the anchor
        return len(tokenizer.tokenize(answer_continuation(word)))

    blocked = blocked_words()
    out = []
    for word in top_n_list("en", TOP_N):
        if not LOWER.fullmatch(word) or word in blocked or zipf_frequency(word, "en") < MIN_ZIPF:
            continue
        cap = word.capitalize()
        form = cap if any(pieces(t, cap) < pieces(t, word) for t in (smol, gemma)) else word
        if PIECES[0] <= pieces(smol, form) <= PIECES[1]:
            out.append(form)
    return sorted(set(out))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    smol_tok, gemma_tok = AutoTokenizer.from_pretrained(argv[0]), AutoTokenizer.from_pretrained(argv[1])
    smol, gemma = whole_words(smol_tok.get_vocab(), "Ġ"), whole_words(gemma_tok.get_vocab(), "▁")
    words = sorted(smol & gemma)
    (DATA / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} words ({len(smol)} SmolLM2, {len(gemma)} Gemma) -> {DATA / 'words.txt'}")
    multi = multi_piece_words(smol_tok, gemma_tok)
    (DATA / "words_multi.txt").write_text("\n".join(multi) + "\n", encoding="utf-8")
    print(f"{len(multi)} words of {PIECES[0]}-{PIECES[1]} SmolLM2 pieces -> {DATA / 'words_multi.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
