"""Resolve the recipe of a (method, dataset, shot count): which view families, prompt sets and
hyper-parameters a fit uses.

    recipe = resolve_recipe("semobridge-t", "dtd", 16)                  # the paper recipe (default)
    recipe = resolve_recipe("tip-adapter", "dtd", 16, recipe="uniform", families=["plain"])

`paper` merges the method's rows of bridge/recipes/table.py: default <- dataset <- dataset@shots (later rows
override earlier ones field by field; hyper-parameters key by key). `uniform` is one shared setting for a
controlled comparison: the view families and prompt sets given (default: the plain view and every text set
of the cache) and every method's own default hyper-parameters. In both, view families or prompt sets given
explicitly replace the recipe's (a sweep over text sets does that; every result records what it used), and
`--hparam` overrides come last.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from clipbridge.errors import ClipBridgeError
from clipbridge.bridge.recipes.common import CUPL_SOURCES
from clipbridge.bridge.recipes.table import RECIPES

PAPER, UNIFORM = "paper", "uniform"
#: Recipe.validation: the protocol decides, or min(K, 4) sampled images per class whatever the protocol
PROTOCOL_VALIDATION, SAMPLED_VALIDATION = "protocol", "sampled"
VALIDATIONS = (PROTOCOL_VALIDATION, SAMPLED_VALIDATION)
RECIPE_NAMES = (PAPER, UNIFORM)
DEFAULT_RECIPE = PAPER


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe. families: view-family specs ("name" or "name:n"); prompts: text-set specs (a
    trailing "?" = optional; "a|b" = a, else b); hparams: for the method's fit; rows: the table rows merged (paper);
    sources: field -> where its value comes from; validation: "protocol" (the protocol's validation set) or
    "sampled" (min(K, 4) images per class under every protocol: lpclip's rule)."""

    name: str
    method: str
    dataset: str
    shots: int
    families: tuple[str, ...]
    prompts: tuple[str, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    rows: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    validation: str = PROTOCOL_VALIDATION

    def missing_prompts(self, available: Sequence[str]) -> list[str]:
        """The required text sets (no trailing "?") that `available` lacks (of alternatives "a|b", the first)."""
        if self.name == UNIFORM and not self.prompts:
            return []
        return [_alternatives(spec)[0] for spec in self.prompts
                if not spec.endswith("?") and _choice(spec, available) is None]

    def prompt_sets(self, available: Sequence[str], where: str = "the cache",
                    how_to_add: str | None = None) -> list[str]:
        """The text sets to fit with, given those `available` in the cache (optional ones dropped when absent;
        of alternatives "a|b" the first the cache has); a required set that is missing is a ClipBridgeError
        naming the command that adds it (`how_to_add`, default a generic `extract --prompts ... --cupl
        NAME=FILE`)."""
        if self.name == UNIFORM and not self.prompts:
            return list(available)
        missing = self.missing_prompts(available)
        if missing:
            hint = how_to_add or f"extract {add_text_options(missing)} on the same cache"
            chosen_by_user = self.name == UNIFORM or self.sources.get("prompts", "").startswith("given explicitly")
            other = (f"--prompts {','.join(available)}" if chosen_by_user   # the user chose these sets
                     else "--recipe uniform")
            if self.name != UNIFORM and "cupl" in available and any(cupl_option(name) for name in missing):
                other += (" or --prompts " + ",".join("cupl" if cupl_option(_alternatives(spec)[0]) else
                                                      _choice(spec, available) or _alternatives(spec)[0]
                                                      for spec in self.prompts)
                          + " (the cache's unnamed CuPL set instead)")
            raise ClipBridgeError(
                f"the {self.name} recipe of {self.method} on {self.dataset} uses text set(s) "
                f"{', '.join(missing)}{cupl_whose(missing)}, which {where} lacks (it has {', '.join(available)}); "
                f"add with: {hint}; or fit with {other}")
        chosen = [_choice(spec, available) for spec in self.prompts]
        return [name for name in chosen if name is not None]

    def describe(self) -> dict[str, Any]:
        """JSON-able form (the `recipe` command, run metadata)."""
        return {"recipe": self.name, "method": self.method, "dataset": self.dataset, "shots": self.shots,
                "view_families": list(self.families), "prompt_sets": list(self.prompts), "hparams": self.hparams,
                "validation": self.validation, "rows": list(self.rows), "sources": self.sources}


def _rows(method: str, dataset: str, shots: int) -> list[tuple[str, dict]]:
    table = RECIPES.get(method)
    if table is None:
        raise ClipBridgeError(f"no paper recipe for method {method!r}; known: {', '.join(sorted(RECIPES))} "
                              "(use --recipe uniform)")
    keys = ["default", dataset, f"{dataset}@{shots}"]
    return [(key, table[key]) for key in keys if key in table]


def resolve_recipe(method: str, dataset: str, shots: int, *, recipe: str = DEFAULT_RECIPE,
                   families: Sequence[str] | None = None, prompts: Sequence[str] | None = None) -> Recipe:
    """The recipe of `method` on `dataset` at `shots` shots; `families` / `prompts`, when given, replace the
    recipe's view families / prompt sets."""
    if recipe not in RECIPE_NAMES:
        raise ClipBridgeError(f"unknown recipe {recipe!r}; use {' or '.join(RECIPE_NAMES)}")
    if recipe == UNIFORM:
        return Recipe(UNIFORM, method, dataset, int(shots), tuple(families or ("plain",)), tuple(prompts or ()),
                      sources={"all": "uniform recipe: the given view families and prompt sets, every method's "
                                      "default hyper-parameters"})
    merged: dict[str, Any] = {"families": None, "prompts": None, "hparams": {}, "validation": PROTOCOL_VALIDATION}
    sources: dict[str, str] = {}
    rows = _rows(method, dataset, shots)
    for key, row in rows:
        if "validation" in row:
            if row["validation"] not in VALIDATIONS:
                raise ClipBridgeError(f"recipe row {method}/{key}: validation {row['validation']!r} is not one of "
                                      f"{', '.join(VALIDATIONS)}")
            merged["validation"] = row["validation"]
            sources["validation"] = row.get("validation_source", row["source"])
        for name in ("families", "prompts"):
            if row.get(name) is not None:
                merged[name] = tuple(row[name])
                sources[name] = row.get(f"{name}_source", row["source"])
        for name, value in row.get("hparams", {}).items():
            merged["hparams"][name] = value
            sources[f"hparams.{name}"] = row.get("hparams_source", row["source"])
    for name, given in (("families", families), ("prompts", prompts)):
        if given:
            merged[name] = tuple(given)
            sources[name] = "given explicitly (replacing the paper recipe's)"
    return Recipe(PAPER, method, dataset, int(shots), merged["families"] or ("plain",), merged["prompts"] or (),
                  dict(merged["hparams"]), tuple(key for key, _ in rows), sources, merged["validation"])


def _alternatives(spec: str) -> list[str]:
    """'cupl:ape|cupl?' -> ['cupl:ape', 'cupl']: a prompt spec's alternatives, in order of preference."""
    return spec.rstrip("?").split("|")


def _choice(spec: str, available: Sequence[str]) -> str | None:
    """The first of a prompt spec's alternatives that `available` holds (None: none)."""
    return next((name for name in _alternatives(spec) if name in available), None)


def add_text_options(missing: Sequence[str]) -> str:
    """The extract options that add text sets `missing` to an existing cache ('--prompts coop,cupl:ape --cupl
    ape=FILE'); extending a cache copies the sets and images it holds, only these are encoded."""
    options = f"--prompts {','.join(missing)}"
    return options + "".join(f" --cupl {cupl_option(name)}" for name in missing if cupl_option(name))


def cupl_option(set_name: str) -> str | None:
    """'cupl:ape' -> 'ape=FILE' (the extract --cupl value that adds the set); None for other sets."""
    name = set_name.rstrip("?")
    return f"{name.split(':', 1)[1]}=FILE" if name.startswith("cupl:") else None


def cupl_whose(set_names: Sequence[str]) -> str:
    """' (cupl:ape = APE's gpt3_prompts/...)' for the named CuPL sets among `set_names` (CUPL_SOURCES)."""
    known = [f"{name} = {CUPL_SOURCES[name.split(':', 1)[1]]}" for name in set_names
             if name.startswith("cupl:") and name.split(":", 1)[1] in CUPL_SOURCES]
    return f" ({'; '.join(known)})" if known else ""


def parse_family(spec: str) -> tuple[str, int | None]:
    """'semo-r0.8-j:5' -> ('semo-r0.8-j', 5): the first 5 copies of a family; 'flip' -> ('flip', None)."""
    name, sep, count = spec.partition(":")
    if not sep:
        return name, None
    if not count.isdigit() or int(count) < 1:
        raise ClipBridgeError(f"view family {spec!r}: expected NAME or NAME:COPIES with COPIES >= 1")
    return name, int(count)


def family_name(spec: str) -> str:
    """'semo-r0.8-j:5' -> 'semo-r0.8-j'."""
    return parse_family(spec)[0]


def recipe_families(dataset: str, shots: Iterable[int], methods: Iterable[str] | None = None) -> list[str]:
    """Every view family the paper recipes of `methods` (default: all with a recipe) use on `dataset` at
    these shot counts, in a stable order (what `extract --view-families recipes` encodes)."""
    names: dict[str, None] = {}
    for method in (methods if methods is not None else RECIPES):
        for k in shots:
            for spec in resolve_recipe(method, dataset, k).families:
                names.setdefault(family_name(spec))
    return list(names)
