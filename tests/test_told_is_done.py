"""Issue 20 item 9: what users are told is what happens. `methods` prints the ranges `fit` accepts (every printed
bound accepted, every value just past one refused); inputs given in place of the paper recipe's are applied
and recorded as overrides; a text-set hint never suggests what just failed."""
from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner

import clipbridge as cb
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.recipes import resolve_recipe
from clipbridge.bridge.registry import REGISTRY, check_hparams
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.commands.methods import methods
from clipbridge.evaluate.fitting.plan import plan_fit

LISTING = json.loads(CliRunner().invoke(methods, ["--json"]).output)
NUMERIC = [(entry["name"], key, spec) for entry in LISTING for key, spec in entry["hparams"].items()
           if isinstance(spec["default"], (int, float, list)) and not isinstance(spec["default"], bool)]


def _value(default, number):
    """`number` in the shape of the default: an int for an integer, a list of its length (at least 1)."""
    if isinstance(default, list):
        return [number] * max(1, len(default))
    return int(number) if isinstance(default, int) and float(number).is_integer() else number


def _bounds(name: str, key: str, spec: dict) -> list[tuple[float, bool, bool]]:
    """(value, accepted?, numeric bound?) for every bound the printed text states: on it and just past it."""
    text, default = spec["allowed"], spec["default"]
    step = 1 if isinstance(default, int) and not isinstance(default, list) else 1e-6
    cases = []
    for sign, number in re.findall(r"(>=|<=|>|<) (-?[\d.]+(?:e[+-]?\d+)?)", text):
        bound = float(number)
        if sign == ">=":
            cases += [(bound, True, True), (bound - step, False, True)]
        elif sign == ">":
            cases += [(bound + step, True, True), (bound, False, True)]
        elif sign == "<=":
            cases += [(bound, True, True), (bound + step, False, True)]
    other = re.search(r"(at most|at least) (\w+)", text)
    if other:
        limit = dict(next(e for e in LISTING if e["name"] == name)["hparams"])[other.group(2)]["default"]
        cases += [(limit, True, False), (limit + step if other.group(1) == "at most" else limit - step, False, False)]
    return cases


def _partner(key: str, spec: dict) -> str | None:
    """The other end of a printed `at most / at least NAME` pair."""
    other = re.search(r"(?:at most|at least) (\w+)", spec["allowed"])
    return other.group(1) if other else None


@pytest.mark.parametrize("name, key, spec", NUMERIC, ids=[f"{n}.{k}" for n, k, _ in NUMERIC])
def test_every_printed_range_bound_is_what_fit_accepts(name, key, spec):
    cases = _bounds(name, key, spec)
    assert cases, f"{name}.{key}: no bound printed ({spec['allowed']!r})"
    partner = _partner(key, spec)
    for number, accepted, numeric in cases:
        value = _value(spec["default"], number)
        if accepted:       # a numeric bound holds whatever the pair's other end is, so that end moves with it
            check_hparams(REGISTRY[name], {key: value, **({partner: value} if partner and numeric else {})})
        elif not (isinstance(spec["default"], int) and not float(number).is_integer()) and math.isfinite(number):
            with pytest.raises(BridgeInputError):
                check_hparams(REGISTRY[name], {key: value})


def test_a_list_length_printed_is_the_length_fit_wants():
    fixed = [(n, k, s) for n, k, s in NUMERIC if isinstance(s["default"], list) and "a list of" in s["allowed"]
             and "non-empty" not in s["allowed"]]
    for name, key, spec in fixed:
        length = int(re.search(r"a list of (\d+)", spec["allowed"]).group(1))
        check_hparams(REGISTRY[name], {key: list(spec["default"])[:length]})
        with pytest.raises(BridgeInputError):
            check_hparams(REGISTRY[name], {key: list(spec["default"]) + [1.0]})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = write_synthetic_cache(tmp_path_factory.mktemp("told") / "c.h5", classes=3, train_per_class=2, dim=8,
                                 width=6, val=6, test=6, families={"flip": 1, "tip": 2})
    return cb.open_cache(path)


def test_inputs_given_in_place_of_the_paper_recipes_are_recorded_as_overrides(cache):
    own = resolve_recipe("tip-adapter", str(cache.attrs["dataset"]), 1)
    kept = plan_fit(cache, "tip-adapter", 1, families=list(own.families), prompts=[p.rstrip("?") for p in own.prompts])
    assert kept.overrides == {}                                     # the recipe's own inputs, given: no override
    changed = plan_fit(cache, "tip-adapter", 1, families=["plain", "flip"], overrides={"search_rounds": 2})
    assert changed.families == ("plain", "flip")
    assert changed.overrides["view_families"] == ["plain", "flip"] and changed.overrides["search_rounds"] == 2
    assert plan_fit(cache, "tip-adapter", 1).overrides == {}
    assert plan_fit(cache, "tip-adapter", 1, recipe="uniform", families=["flip"]).overrides == {}


def test_the_override_reaches_the_records(cache):
    run = cb.fit(cache, method="zeroshot", shots=1, seeds=[1], view_families=["flip"])
    (record,) = run.evaluate()
    assert record["recipe"] == "paper" and record["overrides"] == {"view_families": ["flip"]}
    assert record["view_families"] == ["flip"]


@pytest.mark.parametrize("recipe", ["paper", "uniform"])
def test_a_text_set_given_that_the_cache_lacks_suggests_the_sets_it_has_not_another_recipe(cache, recipe):
    with pytest.raises(ClipBridgeError) as info:
        plan_fit(cache, "semobridge", 1, recipe=recipe, prompts=["coop", "templates"])
    message = str(info.value)
    assert "uses text set(s) templates" in message and "--recipe uniform" not in message
    assert message.endswith("or fit with --prompts " + ",".join(cache.text_sets))


def test_a_text_set_of_the_recipe_itself_suggests_the_uniform_recipe():
    with pytest.raises(ClipBridgeError, match=r"uses text set\(s\) cupl.*or fit with --recipe uniform"):
        resolve_recipe("semobridge", "dtd", 1).prompt_sets(["coop", "ensemble"])
