"""A bench's tables folder (results/<name>/) shared by every bench given that name: the grids merge, never drop.

Two `bench` processes with the same `--name` (at once, or one after the other) each write the tables of their
own grid. The folder remembers which results its tables show (GRID_KEYS: the record keys,
evaluate.reporting.records.record_key, and the bench settings that are not part of a key), and a bench
writes, under an exclusive lock on the folder (evaluate.reporting.files.folder_lock), the tables of its grid
merged with that list: whichever bench finishes last, the tables show both grids. Every file is replaced
whole (write_text_atomic).

A merge that would put two results in one table cell (the same dataset, model, method, shots and seed under
another recipe, protocol, views, prompts or hyper-parameters) or mix recipes or protocols in one folder is
refused with one line, before the bench fits anything and again under the lock; the records stay in
results.jsonl either way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.reporting.files import write_text_atomic
from clipbridge.evaluate.reporting.records import KEY_FIELDS

GRID_KEYS = "grid.json"
# A table cell: the key fields build_table groups on; every other key field must agree within one cell.
CELL_FIELDS = ("dataset", "eval_dataset", "model", "pretrained", "method", "shots", "seed")
SETTINGS = ("recipe", "protocol")   # one value per folder (a table's caption states one of each)


@dataclass
class GridFolder:
    """What a tables folder shows: record keys, the settings every bench in it shares, and per-grid lists
    (datasets, caches, OOD caches, methods, shots, seeds, hyper-parameters, skipped methods) merged."""

    keys: set[str] = field(default_factory=set)
    settings: dict[str, str] = field(default_factory=dict)
    lists: dict[str, Any] = field(default_factory=dict)

    def merged(self, keys: Iterable[str], settings: dict[str, str], lists: dict[str, Any], folder: Path) -> GridFolder:
        """This folder's content with another grid added (refused when the two cannot share tables)."""
        for name in SETTINGS:
            if name in self.settings and self.settings[name] != settings[name]:
                raise ClipBridgeError(
                    f"{folder} holds the tables of a bench with {name} {self.settings[name]!r}, not "
                    f"{settings[name]!r}: give this bench another --name (its records stay in results.jsonl)")
        keys = self.keys | set(keys)
        check_one_result_per_cell(keys, folder)
        return GridFolder(keys, dict(settings), merge_lists(self.lists, lists))


def merge_lists(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Union of two grids' lists (order kept: old first), dicts merged (new wins)."""
    out = dict(old)
    for name, value in new.items():
        if isinstance(value, dict):
            out[name] = {**old.get(name, {}), **value}
        else:
            seen = list(old.get(name, []))
            out[name] = seen + [item for item in value if item not in seen]
    return out


def check_one_result_per_cell(keys: Iterable[str], folder: Path) -> None:
    """Refuse keys of which two fall in the same table cell but differ in another key field."""
    cells: dict[tuple, dict[str, Any]] = {}
    for key in sorted(keys):                              # the same first conflict named in every process
        fields = dict(zip(KEY_FIELDS, json.loads(key)))
        cell = tuple(json.dumps(fields.get(name), sort_keys=True) for name in CELL_FIELDS)
        other = cells.setdefault(cell, fields)
        differing = [name for name in KEY_FIELDS if name not in CELL_FIELDS and other.get(name) != fields.get(name)]
        if differing:
            raise ClipBridgeError(
                f"{folder} already tables {fields['method']} {fields['shots']}-shot seed {fields['seed']} on "
                f"{fields['dataset']} with another {', '.join(differing)}: give this bench another --name "
                "(its records stay in results.jsonl)")


def read_grid_folder(folder: Path) -> GridFolder:
    """The folder's GRID_KEYS (empty for a new folder, or one written before merging existed)."""
    path = Path(folder) / GRID_KEYS
    if not path.is_file():
        return GridFolder()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return GridFolder(set(document["keys"]), dict(document["settings"]), dict(document["lists"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ClipBridgeError(f"{path} is damaged ({error}): delete {folder} and run the bench again "
                              "(its records in results.jsonl are kept, so nothing is fitted again)") from None


def write_grid_folder(folder: Path, content: GridFolder) -> Path:
    """Write GRID_KEYS atomically (sorted, so the same grids give the same file)."""
    document = {"keys": sorted(content.keys), "settings": content.settings, "lists": content.lists}
    return write_text_atomic(Path(folder) / GRID_KEYS, json.dumps(document, indent=1, sort_keys=True) + "\n")
