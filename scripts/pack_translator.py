"""Pack a saved translator (a run's OUT/translator) as a bf16 .tgz small enough to come back from a
GPU machine call (files return only up to 16 MiB; the embedded translator is ~29 MB in fp32, ~14.5 MB
in bf16). Unpack it and pass the folder to --init-from or BottleneckedGatedTranslator.from_pretrained,
which load it back into fp32 (bf16 rounding: relative error ~0.4% per weight).

Usage: python scripts/pack_translator.py TRANSLATOR_DIR OUT.tgz
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lw_runtime.translator import BottleneckedGatedTranslator  # noqa: E402


def pack(translator_dir: str | Path, out: str | Path) -> Path:
    model = BottleneckedGatedTranslator.from_pretrained(translator_dir)
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "translator"
        model.save_pretrained(folder, dtype=torch.bfloat16)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(folder, arcname="translator")
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print(__doc__)
        return 2
    out = pack(argv[0], argv[1])
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
