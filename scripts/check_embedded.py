"""Check the embedded default on this machine: Gemma tokenizer ids and the " Germany" logit."""
import sys

import torch

from lw_runtime.models import load_model

PARIS = "Paris is the capital of France and Berlin is the capital of"
REF = [2, 50429, 563, 506, 5279, 529, 7001, 532, 15687, 563, 506, 5279, 529]
src = load_model(sys.argv[1], device="cuda" if torch.cuda.is_available() else "cpu")
ids = src.tokenizer(PARIS).input_ids
with torch.no_grad():
    logits = src.model(torch.tensor([REF], device=src.device)).logits[0, -1].float()
top = int(logits.argmax())
print(f"tokenizer ids match: {ids == REF}; top next token {src.tokenizer.convert_ids_to_tokens(top)!r} at {float(logits[top]):.2f}")
tgt = load_model(sys.argv[2], device=src.device)
print(f"target pad {tgt.tokenizer.pad_token!r} eos {tgt.tokenizer.eos_token!r}; embedding rms {tgt.embedding_rms():.4f}")
assert ids == REF and src.tokenizer.convert_ids_to_tokens(top) == "▁Germany"
