"""What the stage-3 commands read from their options before any work: per-method --hparam items (checked
against each method once, here), --methods lists, and the cache a --dataset / --cache names."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from clipbridge.bridge.recipes import order_methods
from clipbridge.cache.locate import find_cache
from clipbridge.cache.options import parse_hparams, parse_names
from clipbridge.cache.schema import default_cache_path
from clipbridge.errors import ClipBridgeError
from clipbridge.extract.bundled import weights_sha256


def method_hparams(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """['semobridge-t.steps=1000', ...] -> {'semobridge-t': {'steps': 1000}}, each checked against the method."""
    from clipbridge.bridge.registry import check_hparams, get_method

    per_method: dict[str, dict[str, Any]] = {}
    for item in items:
        target, dot, rest = item.partition(".")
        if not dot or target not in methods:
            raise ClipBridgeError(f"--hparam {item!r} must look like METHOD.KEY=VALUE with METHOD one of "
                                  f"{', '.join(methods)}")
        per_method.setdefault(target, {}).update(parse_hparams([rest]))
    for method, values in per_method.items():
        check_hparams(get_method(method), values)
    return per_method


def resolve_cache(entry: str | None, model: str | None, pretrained: str | None, root: str) -> Path:
    """A cache file path, or the cache of a dataset name (None: any) under root with the model and weights
    given; without them, the only model/weights holding that dataset (cache.locate.find_cache)."""
    if entry and (entry.endswith(".h5") or Path(entry).is_file()):
        return Path(entry)
    sha256 = weights_sha256(model, pretrained) if model and pretrained else ""
    if entry and model and pretrained:
        path = default_cache_path(model, pretrained, entry, root=root)
        if path.is_file() or Path(str(path) + ".tmp").exists():
            return path
    return find_cache(root, dataset=entry, model=model, pretrained=pretrained, sha256=sha256)


def method_names(text: str) -> list[str]:
    """'all' -> every registered method (canonical order); else the listed names, each checked."""
    from clipbridge.bridge.registry import REGISTRY, get_method

    import clipbridge.bridge.methods  # noqa: F401  (registers every method)

    if text.strip() == "all":
        return order_methods(REGISTRY)
    names = parse_names(text) or []
    for name in names:
        get_method(name)
    if not names:
        raise ClipBridgeError("--methods is empty")
    return names
