"""Find a run's cache when the run is used from another folder or the cache moved.

run.json records the cache's absolute path and its id (and, for runs saved before, a path relative to the
folder `fit` ran in). find_run_cache() tries, in order: that path; a file of the same name in the run's
folder and each folder above it (a project copied whole); and under --cache-root, <cache-root>/<name> and
<cache-root>/*/<name>. The first file holding the run's cache id is used; when none does, the one-line error
names every place looked.
"""
from __future__ import annotations

from pathlib import Path

from clipbridge.errors import ClipBridgeError


def candidate_paths(recorded: str, run_dir: Path | None, cache_root: str | Path | None) -> list[Path]:
    """Where the cache named `recorded` may be, in the order searched (no duplicates)."""
    name = Path(recorded).name
    places = [Path(recorded)]
    if run_dir is not None:
        folder = Path(run_dir).resolve()
        places += [folder / name] + [parent / name for parent in folder.parents]
    if cache_root is not None:
        root = Path(cache_root)
        places += [root / name] + sorted(root.glob(f"*/{name}"))
    unique: list[Path] = []
    for place in places:
        if place not in unique:
            unique.append(place)
    return unique


def find_run_cache(recorded: str, cache_id: str, run_dir: Path | None, cache_root: str | Path | None):
    """The open cache (cache.reader.Cache) with `cache_id`, looked for as the module docstring says."""
    from clipbridge.cache.integrity import DamagedCacheError
    from clipbridge.cache.reader import open_cache

    looked, other = [], []
    for place in candidate_paths(recorded, run_dir, cache_root):
        looked.append(str(place))
        if not place.is_file():
            continue
        try:
            cache = open_cache(place)
        except DamagedCacheError:
            raise
        except ClipBridgeError:
            other.append(str(place))
            continue
        if str(cache.cache_id) == cache_id:
            return cache
        other.append(str(place))
    detail = f" ({', '.join(other)} hold other caches)" if other else ""
    raise ClipBridgeError(f"the run's cache {Path(recorded).name} (id {cache_id}) was not found; looked in "
                          f"{', '.join(looked)}{detail}; pass --cache FILE or --cache-root FOLDER")
