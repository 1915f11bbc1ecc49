"""Which weights a cache belongs to: a pretrained tag by name, a checkpoint file by its content.

Two checkpoints that share a file name (open_clip's training writes `epoch_latest.pt` in every run) are
different weights: the default cache folder of a file carries a short hash of its SHA-256
(`cache/ViT-B-16--epoch_latest-3f9a1c2e/`), and a cache opened with `--pretrained FILE` must hold exactly
that file's SHA-256. Tags (`openai`, `laion2b_s34b_b88k`, ...) keep readable folders (`ViT-B-16--openai/`).

One folder per weights: the same weights extracted under two names (clipbridge-tiny's tag `shapes` and its
file `clipbridge-tiny-shapes.safetensors`) share the folder of whichever name came first, found by the SHA-256
its caches record (`weights_folder`; a tag that stands for a file, registered with `register_tag_file`, has
that file's SHA-256); the other name is an alias (`check_weights` accepts it for a cache of those weights). open_clip's hub tags have no SHA-256 before download, so they keep folders of their own.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from clipbridge.errors import ClipBridgeError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
RANDOM = "random"
SHORT_HASH = 8


def is_checkpoint_path(pretrained: str) -> bool:
    """A --pretrained value names a file (rather than a tag) when it has a path separator or a checkpoint suffix."""
    text = str(pretrained)
    return "/" in text or "\\" in text or Path(text).suffix.lower() in CHECKPOINT_SUFFIXES


def file_stem(pretrained: str) -> str:
    """'/w/run2/epoch_latest.pt' -> 'epoch_latest' (a tag is returned unchanged)."""
    text = str(pretrained).strip()
    if not is_checkpoint_path(text):
        return text
    name = Path(text).name
    for suffix in CHECKPOINT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (remembered per path, size and modification time within the process)."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Weights:
    """label: the tag, or the file's stem; sha256: the file's (empty for tags and random weights)."""

    label: str
    sha256: str = ""

    @property
    def folder_label(self) -> str:
        """'openai', or 'epoch_latest-3f9a1c2e' for a file."""
        return f"{self.label}-{self.sha256[:SHORT_HASH]}" if self.sha256 else self.label


def weights_of(pretrained: str | None) -> Weights:
    """The Weights a --pretrained value names (a file must exist: its content identifies it)."""
    if pretrained in (None, "", RANDOM, "none"):
        return Weights(RANDOM)
    if is_checkpoint_path(str(pretrained)):
        path = Path(str(pretrained)).expanduser()
        if not path.is_file():
            raise ClipBridgeError(f"checkpoint file not found: {path}")
        return Weights(file_stem(str(pretrained)), file_sha256(path))
    return Weights(str(pretrained))


def safe_component(text: str) -> str:
    """A path component without separators or odd characters ("hf-hub:org/name" -> "hf-hub_org_name")."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "unnamed"


def cache_folder(model: str, pretrained: str | None) -> str:
    """'<model>--<tag>' or '<model>--<file stem>-<8 hex of its SHA-256>'."""
    return f"{safe_component(model)}--{safe_component(weights_of(pretrained).folder_label)}"


def recorded_weights(path: Path) -> tuple[str, str]:
    """(pretrained, pretrained_sha256) a cache file records; ("", "") when it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return str(handle.attrs.get("pretrained", "")), str(handle.attrs.get("pretrained_sha256", "") or "")
    except (OSError, KeyError):
        return "", ""


def weights_folder(root: str | os.PathLike, model: str, sha256: str) -> Path | None:
    """The folder under `root` of `model`'s caches whose weights have this SHA-256 (first in name order), or
    None (no SHA given, or no such cache yet)."""
    if not sha256:
        return None
    for folder in sorted(Path(root).glob(f"{safe_component(model)}--*")):
        if folder.is_dir() and any(recorded_weights(p)[1] == sha256 for p in sorted(folder.glob("*.h5"))):
            return folder
    return None


def weights_cache_path(root: str | os.PathLike, model: str, pretrained: str | None, dataset: str,
                       sha256: str = "") -> Path:
    """Where a new cache of `dataset` goes: into the folder of caches of the same weights (weights_folder: by
    the file's SHA-256, or `sha256` for a tag that stands for a known file), else the weights' own folder
    (cache_folder). A cache of the dataset already in the weights' own folder (or its unfinished `.tmp`)
    stays where it is, so an extraction resumes."""
    sha256 = sha256 or (weights_of(pretrained).sha256 if pretrained and is_checkpoint_path(pretrained) else "")
    own = Path(root) / cache_folder(model, pretrained)
    name = f"{safe_component(dataset)}.h5"
    if (own / name).exists() or (own / f"{name}.tmp").exists():      # a cache (or an extraction to resume) there
        return own / name
    return (weights_folder(root, model, sha256) or own) / name


#: {(model, tag): checkpoint file} of tags that stand for a known file (registered by extract.bundled).
_TAG_FILES: dict[tuple[str, str], Path] = {}


def register_tag_file(model: str, tag: str, path: str | os.PathLike) -> None:
    """Declare that `model`'s tag names the checkpoint file `path` (its SHA-256 then identifies the tag)."""
    _TAG_FILES[(model, tag)] = Path(path)


def tag_sha256(model: str, tag: str) -> str:
    """The SHA-256 of the file a registered tag stands for; "" for any other tag."""
    path = _TAG_FILES.get((model, tag))
    return file_sha256(path) if path is not None and path.is_file() else ""


def check_weights(path: str | os.PathLike, attrs: dict, pretrained: str) -> None:
    """Refuse, in one line naming both, a cache whose weights are not the `pretrained` asked for: a file must
    have the SHA-256 the cache recorded; a tag must be the tag it recorded."""
    stored, stored_sha = str(attrs.get("pretrained", "")), str(attrs.get("pretrained_sha256", "") or "")
    asked = weights_of(pretrained)
    if asked.sha256:
        if asked.sha256 == stored_sha:
            return
        recorded = f"{stored} (sha256 {stored_sha[:12]})" if stored_sha else repr(stored)
        raise ClipBridgeError(f"{path}: the cache was extracted with weights {recorded}, not {pretrained} "
                              f"(sha256 {asked.sha256[:12]}); extract it for these weights or pass their own cache")
    if asked.label != stored and not (stored_sha and tag_sha256(str(attrs.get("model", "")), asked.label) == stored_sha):
        raise ClipBridgeError(f"{path}: cache holds pretrained {stored!r}, not the {pretrained!r} asked for")
