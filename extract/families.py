"""What a cache of an open_clip model can hold: `python -m clipbridge.extract.families MODEL [MODEL ...]`.

Each model is created with random weights (no download) and probed as extraction probes it
(extract.models.checked_text_head): how its text tower pools and projects, whether the pooled feature
("EOS feature") and Wt (+ b) are stored, the relative error of the identity eos @ Wt + b == encode_text,
the logit bias, and D. One Markdown row per model. A model whose tokenizer cannot be loaded here (SigLIP's
Hugging Face tokenizer without network) is probed with stand-in token ids (random ids of its vocabulary,
padded to its context length), and its row says so: the text tower's arithmetic does not depend on which
ids it reads.
"""
from __future__ import annotations

import argparse
import sys
import time

import open_clip
import torch

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.models import (PROBE_PROMPTS, check_model_name, checked_text_head, encode_text_with_eos,
                                       identity_error, load_tokenizer, logit_bias, quiet_weight_download,
                                       text_head)

HEADER = ("| model | text pooling | projection | EOS features | identity error | logit bias | D | tokens | "
          "seconds |\n|---|---|---|---|---|---|---|---|---|")


def stand_in_tokens(name: str, count: int = len(PROBE_PROMPTS), seed: int = 0) -> torch.Tensor:
    """[count, L] int64: a few random ids of the model's vocabulary, then padding (id 0) to its context length."""
    text_cfg = open_clip.get_model_config(name)["text_cfg"]
    length, vocab = int(text_cfg.get("context_length", 77)), int(text_cfg.get("vocab_size", 49408))
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(count, length, dtype=torch.long)
    for row in range(count):
        n = int(torch.randint(2, min(12, length), (1,), generator=g))
        tokens[row, :n] = torch.randint(2, vocab, (n,), generator=g)
    return tokens


def probe_family(name: str) -> dict:
    """One model's row: its text head, identity error, logit bias and D, with random weights."""
    check_model_name(name)
    started = time.perf_counter()
    try:
        tokens, source = load_tokenizer(name)(PROBE_PROMPTS), "its tokenizer"
    except ClipBridgeError as error:
        tokens, source = stand_in_tokens(name), f"stand-in ids ({str(error).split(': ', 1)[-1].split(';')[0]})"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with quiet_weight_download(True):        # a Hugging Face text tower fetches its config
            model = open_clip.create_model(name, pretrained=None).eval()
        with torch.no_grad():
            bias = text_head(model).bias
            if bias is not None:                 # open_clip initialises it to zero; a trained one is not
                bias.normal_()
    with torch.no_grad():
        head = checked_text_head(model, tokens)
        error = identity_error(*encode_text_with_eos(model, tokens, head), head) if head.has_eos else None
    offset = logit_bias(model)
    return {"model": name, "pooling": head.pooling, "projection": head.projection,
            "eos": "stored" if head.has_eos else f"none: {head.note}",
            "identity_error": "–" if error is None else f"{error:.1e}",
            "logit_bias": "–" if offset is None else f"{offset:g}", "dim": head.dim, "tokens": source,
            "seconds": time.perf_counter() - started}


def markdown_row(row: dict) -> str:
    return (f"| {row['model']} | {row['pooling']} | {row['projection']} | {row['eos']} | {row['identity_error']} | "
            f"{row['logit_bias']} | {row['dim']} | {row['tokens']} | {row['seconds']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipbridge.extract.families",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="open_clip model names (random weights, nothing downloaded)")
    args = parser.parse_args(argv)
    print(HEADER)
    failed = 0
    for name in args.models:
        try:
            print(markdown_row(probe_family(name)), flush=True)
        except (ClipBridgeError, RuntimeError, OSError, ValueError, ImportError) as error:
            failed += 1
            print(f"| {name} | error: {str(error).strip().splitlines()[0]} |||||||", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
