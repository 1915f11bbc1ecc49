"""The weights that ship with the package, by model and tag (light: no torch or open_clip import, so that
commands resolving a tag to its file, evaluate's cache lookup, stay quick).

    bundled_file("clipbridge-tiny", "shapes")  ->  .../extract/weights/clipbridge-tiny-shapes.safetensors
"""
from __future__ import annotations

from pathlib import Path

from clipbridge.cache.weights import is_checkpoint_path, register_tag_file, tag_sha256, weights_of

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_WEIGHTS = {"clipbridge-tiny": {"shapes": WEIGHTS_DIR / "clipbridge-tiny-shapes.safetensors"}}
for _model, _tags in BUNDLED_WEIGHTS.items():      # a bundled tag is its file's weights (cache.weights aliases)
    for _tag, _file in _tags.items():
        register_tag_file(_model, _tag, _file)


def bundled_file(model: str, tag: str | None) -> Path | None:
    """The bundled checkpoint of `model`'s tag, or None."""
    return BUNDLED_WEIGHTS.get(model, {}).get(tag or "")


def weights_sha256(model: str, pretrained: str | None) -> str:
    """The SHA-256 of the weights --pretrained names when it is known without loading them: a checkpoint
    file's, or a bundled tag's file's; "" for open_clip's hub tags, random weights and missing files."""
    if bundled_file(model, pretrained) is not None:
        return tag_sha256(model, str(pretrained))
    if pretrained and is_checkpoint_path(pretrained) and Path(pretrained).expanduser().is_file():
        return weights_of(pretrained).sha256
    return ""
