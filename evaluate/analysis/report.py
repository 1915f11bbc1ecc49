"""gap.json and gap.md of an analysis: one row per representation, every number defined in the file."""
from __future__ import annotations

import math
from typing import Any

DEFINITIONS = {
    "centroid_gap": "‖mean_i n(image_i) − mean_c T̄_c‖ over the analysed test images and the C class texts",
    "own_text_cosine": "mean_i cos(image_i, T̄_{y_i})",
    "text_top1": "fraction of test images whose most similar class text is their class's (zero-shot through "
                 "this representation)",
    "intra_cosine": "mean cosine of same-class test-image pairs",
    "inter_cosine": "mean cosine of different-class test-image pairs",
    "separation": "intra_cosine − inter_cosine",
    "roc_auc": "P(a same-class pair's cosine > a different-class pair's) + ½ P(equal), exact from ranks",
    "nn_consistency": "fraction of test images whose most similar other analysed test image has their class",
    "retrieval@K": "fraction of test queries whose K most similar gallery (few-shot support) images, by "
                   "cosine, include an image of their class",
    "method_top1": "the fitted method's own top-1 accuracy on the analysed test images (its full logits)",
}

# (key, column title, scale, decimals) of gap.md's table
COLUMNS = (("centroid_gap", "centroid gap", 1, 4), ("own_text_cosine", "own-class text cos", 1, 4),
           ("text_top1", "text top-1 %", 100, 2), ("intra_cosine", "intra-class cos", 1, 4),
           ("inter_cosine", "inter-class cos", 1, 4), ("separation", "intra − inter", 1, 4),
           ("roc_auc", "ROC-AUC", 1, 4), ("nn_consistency", "NN consistency %", 100, 2),
           ("retrieval@1", "R@1 %", 100, 2), ("retrieval@5", "R@5 %", 100, 2),
           ("method_top1", "method top-1 %", 1, 2))


def _number(value: Any, scale: float, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.{decimals}f}"


def gap_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of gap.md: one row per representation (rows: gap.json's `representations`)."""
    lines = ["| representation | " + " | ".join(title for _, title, _, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        values = {**row["metrics"], "method_top1": row.get("method_top1")}
        lines.append(f"| {row['name']} | " + " | ".join(_number(values.get(key), scale, decimals)
                                                       for key, _, scale, decimals in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def gap_markdown(document: dict[str, Any]) -> str:
    """gap.md: what was analysed (images, gallery, pairs and their sampling), the table, the notes."""
    d = document
    images, pairs, gallery = d["images"], d["pairs"], d["gallery"]
    lines = [f"# Modality gap: {d['dataset']} ({d['model']} / {d['pretrained']}), {d['shots']}-shot, seed {d['seed']}",
             "",
             f"- Test images analysed: {images['analysed']:,} of {images['total']:,} ({images['sampling']}).",
             f"- Gallery for retrieval: {gallery['images']:,} support images ({gallery['what']}).",
             f"- Pairs: {pairs['intra']['used']:,} of {pairs['intra']['total']:,} same-class and "
             f"{pairs['inter']['used']:,} of {pairs['inter']['total']:,} different-class ({pairs['sampling']}).",
             f"- Text side: {d['text']}.",
             *(["- **Validation = test** (protocol paper on a cache without val): the bridges were tuned on the "
                "test split analysed here."] if d.get("val_is_test") else []),
             "", gap_table(d["representations"]).rstrip("\n"), ""]
    for row in d["representations"]:
        own = row["metrics"].get("own_text")
        if own:
            lines.append(f"- {row['name']} against its {own['name']}: centroid gap {own['centroid_gap']:.4f}, "
                         f"own-class text cos {own['own_text_cosine']:.4f}, text top-1 "
                         f"{100 * own['text_top1']:.2f} %.")
    lines.append("")
    lines += [f"- {row['name']}: {row['formula']}; {row['source_text']}." for row in d["representations"]]
    lines += ["", "Definitions:", ""] + [f"- {key}: {text}." for key, text in d["definitions"].items()]
    return "\n".join(lines) + "\n"
