"""Cache variants built from a synthetic cache through the public reader and writer (no h5py surgery)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clipbridge.cache.reader import open_cache
from clipbridge.cache.writer import CacheWriter

HF_TEXT_HEAD = {"text_pooling": "hf:MeanPooler", "projection_kind": "Sequential",
                "eos_note": "the text projection is Sequential, not a linear or affine map"}


def without_eos(source: Path, out: Path) -> Path:
    """`source` as a model without EOS features writes it (an HF text tower with an MLP projection): image
    and projected text embeddings only, no Wt, no eos."""
    cache = open_cache(source)
    attrs = {key: cache.attrs[key] for key in ("model", "pretrained", "dataset")}
    with CacheWriter(out, attrs=attrs) as writer:
        writer.write_model(None, cache.logit_scale, text_head=HF_TEXT_HEAD)
        writer.write_classes(cache.classnames, cache.original_classnames)
        for name in cache.text_sets:
            text = cache.text(name)
            writer.write_text(name, text.prompts, text.classes.numpy(), text.projected.numpy(), None)
        for split in cache.splits:
            rows = cache.rows(split)
            writer.write_list(split, cache.list_labels(split), split)
            writer.ensure_split(split, source=rows.source, labels=rows.labels, paths=rows.paths)
            for family, info in cache.families(split).items():
                writer.ensure_family(split, family, rows=info.rows, copies=info.copies,
                                     dim=cache.text(cache.text_sets[0]).projected.shape[1], dtype=np.float32)
                writer.write_views(split, family, np.arange(info.rows.size), cache.views(split, family).numpy())
        writer.set_attrs(coverage=cache.coverage.to_attr())
        return writer.finish()
