"""Finding the cache a command means from what the user gave: a file, a dataset name, a model, weights, or
nothing at all when the cache folder holds a single cache.

    find_cache("cache")                                   # the only cache there
    find_cache("cache", dataset="dtd")                    # the only model with a dtd cache
    find_cache("cache", dataset="dtd", model="ViT-B-16", pretrained="openai")
"""
from __future__ import annotations

from pathlib import Path

from clipbridge.cache.coverage import invocation
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.weights import recorded_weights, safe_component, weights_of


def cache_files(root: str | Path) -> list[Path]:
    """Finished cache files in the default layout <root>/<model>--<weights>/<dataset>.h5, sorted."""
    root = Path(root)
    return sorted(p for p in root.glob("*--*/*.h5") if p.is_file()) if root.is_dir() else []


def find_cache(root: str | Path, *, dataset: str | None = None, model: str | None = None,
               pretrained: str | None = None, sha256: str = "") -> Path:
    """The one cache under `root` matching the filters (a ClipBridgeError naming the candidates, or the
    extract command to run, otherwise). `pretrained` matches a folder of that name, or a cache extracted with
    the same weights under another name (cache.weights: by the file's SHA-256, or `sha256` for a tag that
    stands for a known file)."""
    found = cache_files(root)
    if model:
        found = [p for p in found if p.parent.name.startswith(f"{safe_component(model)}--")]
    if pretrained:
        weights = weights_of(pretrained)
        label, sha256 = safe_component(weights.folder_label), sha256 or weights.sha256
        found = [p for p in found if p.parent.name.endswith(f"--{label}")
                 or (sha256 and recorded_weights(p)[1] == sha256)]
    if dataset:
        found = [p for p in found if p.stem == safe_component(dataset)]
    if len(found) == 1:
        return found[0]
    asked = ", ".join(f"{k} {v}" for k, v in (("dataset", dataset), ("model", model), ("pretrained", pretrained))
                      if v)
    if not found:
        what = f" for {asked}" if asked else ""
        command = f"{invocation()} extract --dataset {dataset or 'NAME'}" + (f" --model {model}" if model else "") + (
            f" --pretrained {pretrained}" if pretrained else "")
        raise ClipBridgeError(f"no cache{what} under {root}/; run `{command}` first, or pass --cache PATH "
                              "(or --cache-root DIR)")
    listed = ", ".join(f"{p.parent.name}/{p.name}" for p in found[:6]) + (" ..." if len(found) > 6 else "")
    raise ClipBridgeError(f"{len(found)} caches under {root}/ match{' ' + asked if asked else ''}: {listed}; "
                          "choose one with --dataset, --model, --pretrained or --cache PATH")
