"""Prompt sets: every prompt of every class, kept separately (never averaged here).

Set names and what they hold (METHOD.md section 1):
    classname  "{}"
    coop       the dataset's CoOp template
    ensemble   CLIP's ensemble as the paper uses it: the CoOp template (not for ImageNet and its variants)
               + the 7 "select" ImageNet templates (not for DTD, EuroSAT, Flowers)
    cupl:NAME  CuPL sentences from a JSON file {classname: [sentences]} (--cupl NAME=FILE, repeatable): one
               set per file, named after whose sentences they are; the paper recipes name theirs
               (`cupl:ape`, `cupl:semobridge`, bridge/recipes/common.py CUPL_SOURCES)
    cupl       the same from an unnamed file (--cupl FILE; what caches held before named sets)
    templates  one template per line with "{}" from a user file (--templates)

In --prompts, `cupl` stands for every CuPL file given (each its own set) and `cupl:NAME` for one of them.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from clipbridge.errors import ClipBridgeError

SELECT_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
DEFAULT_COOP_TEMPLATE = "a photo of a {}."
COOP_TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}
IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
NO_SELECT_TEMPLATES = ("dtd", "eurosat", "oxford_flowers")
PROMPT_SETS = ("classname", "coop", "ensemble", "cupl", "cupl:NAME", "templates")
CUPL = "cupl"
CUPL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass
class PromptSet:
    """prompts [P] with classes [P] (class index of each prompt) and provenance attrs for the cache."""

    name: str
    prompts: list[str]
    classes: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)


def coop_template(dataset: str) -> str:
    """The dataset's CoOp template ("a photo of a {}." for datasets CoOp gives no special one)."""
    return COOP_TEMPLATES.get(dataset, DEFAULT_COOP_TEMPLATE)


def ensemble_templates(dataset: str) -> list[str]:
    """CoOp template (except the ImageNet family) + the 7 select templates (except DTD, EuroSAT, Flowers)."""
    templates = [] if dataset in IMAGENET_FAMILY else [coop_template(dataset)]
    if dataset not in NO_SELECT_TEMPLATES:
        templates += [t for t in SELECT_TEMPLATES if t not in templates]
    return templates


def _fill(template: str, classname: str, source: str) -> str:
    if template.count("{}") != 1:
        raise ClipBridgeError(f"template {template!r} from {source} must contain exactly one '{{}}'")
    return template.replace("{}", classname)


def from_templates(name: str, templates: list[str], classnames: list[str], source: str, **attrs: Any) -> PromptSet:
    """Class-major prompts: for each class c, every template filled with classnames[c]."""
    prompts, classes = [], []
    for label, classname in enumerate(classnames):
        for template in templates:
            prompts.append(_fill(template, classname, source))
            classes.append(label)
    return PromptSet(name, prompts, classes, {"templates": templates, **attrs})


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cupl_set_name(name: str | None) -> str:
    """The text set of a CuPL file: 'cupl:NAME' for a named one, 'cupl' for an unnamed one (name None)."""
    return CUPL if name is None else f"{CUPL}:{name}"


def parse_cupl_options(values: Iterable[str]) -> dict[str, Path]:
    """--cupl values -> {text set name: file}: 'NAME=FILE' gives set 'cupl:NAME', a bare 'FILE' set 'cupl'
    (NAME: letters, digits, '-', '_'); a set given twice is refused."""
    files: dict[str, Path] = {}
    for value in values:
        name, sep, path = str(value).partition("=")
        if sep and CUPL_NAME.fullmatch(name):
            set_name = cupl_set_name(name)
        elif sep and "/" not in name and "\\" not in name:
            raise ClipBridgeError(f"--cupl {value!r}: NAME in NAME=FILE takes letters, digits, '-' and '_' "
                                  "(e.g. --cupl ape=CuPL_prompts_dtd.json)")
        else:
            set_name, path = CUPL, str(value)
        if set_name in files:
            raise ClipBridgeError(f"--cupl gives set {set_name!r} twice")
        files[set_name] = Path(path)
    return files


def cupl_prompts(path: Path, classnames: list[str], set_name: str = CUPL) -> PromptSet:
    """CuPL sentences per class, as text set `set_name`; keys matched case-insensitively with underscores as
    spaces."""
    if not path.is_file():
        raise ClipBridgeError(f"CuPL file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ClipBridgeError(f"cannot read CuPL file {path}: {error}") from error
    if not isinstance(raw, dict):
        raise ClipBridgeError(f"CuPL file {path} must hold a JSON object {{classname: [sentences]}}")
    by_key = {_key(k): v for k, v in raw.items()}
    prompts, classes = [], []
    for label, classname in enumerate(classnames):
        sentences = by_key.get(_key(classname))
        if not sentences:
            raise ClipBridgeError(f"CuPL file {path} has no sentences for class '{classname}'")
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise ClipBridgeError(f"CuPL file {path}: class '{classname}' must map to a list of sentences")
        prompts += list(sentences)
        classes += [label] * len(sentences)
    return PromptSet(set_name, prompts, classes, {"file": path.name, "sha256": _sha256(path)})


def read_templates_file(path: Path) -> list[str]:
    """Templates, one per line with '{}' (blank lines and lines starting with '#' ignored)."""
    if not path.is_file():
        raise ClipBridgeError(f"templates file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise ClipBridgeError(f"templates file {path} holds no template")
    return templates


def _cupl_sets(name: str, cupl: Mapping[str, Path]) -> list[str]:
    """The CuPL text sets a --prompts entry `name` ('cupl' or 'cupl:NAME') stands for."""
    if name == CUPL:
        if not cupl:
            raise ClipBridgeError("prompt set 'cupl' needs --cupl NAME=FILE or --cupl FILE "
                                  "(JSON {classname: [sentences]})")
        return list(cupl)
    if name not in cupl:
        given = f" (given: {', '.join(cupl)})" if cupl else ""
        raise ClipBridgeError(f"prompt set {name!r} needs --cupl {name.split(':', 1)[1]}=FILE{given}")
    return [name]


def build_prompt_sets(set_names: list[str], dataset: str, classnames: list[str], *,
                      cupl: Mapping[str, Path] | Path | None = None,
                      templates: Path | None = None) -> list[PromptSet]:
    """The requested prompt sets for a dataset's (clean) class names, in the order asked. `cupl`: the CuPL
    files by text set ({'cupl:ape': path, ...}, parse_cupl_options), or one unnamed file."""
    cupl = {CUPL: Path(cupl)} if isinstance(cupl, (str, Path)) else dict(cupl or {})
    sets: list[PromptSet] = []
    for name in set_names:
        if name == "classname":
            sets.append(from_templates(name, ["{}"], classnames, "classname"))
        elif name == "coop":
            sets.append(from_templates(name, [coop_template(dataset)], classnames, "coop"))
        elif name == "ensemble":
            sets.append(from_templates(name, ensemble_templates(dataset), classnames, "ensemble"))
        elif name == CUPL or name.startswith(CUPL + ":"):
            sets += [cupl_prompts(Path(cupl[set_name]), classnames, set_name) for set_name in _cupl_sets(name, cupl)
                     if set_name not in {s.name for s in sets}]
        elif name == "templates":
            if templates is None:
                raise ClipBridgeError("prompt set 'templates' needs --templates FILE (one template per line)")
            path = Path(templates)
            sets.append(from_templates(name, read_templates_file(path), classnames, str(path),
                                       file=path.name, sha256=_sha256(path)))
        else:
            raise ClipBridgeError(f"unknown prompt set '{name}' (known: {', '.join(PROMPT_SETS)})")
    return sets
