"""The one fit pipeline, plan -> task -> fit -> score, as the API, `fit`, `bench` (and so sweeps) and `analyze`
run it. The plan is decided before any work: the recipe's view families and prompt sets and the
hyper-parameters (recipe values, then the user's overrides), all checked against the cache and the method
here, once, with the same one-line errors for every caller (the commands also check their --hparam values
before opening a cache, through the same check).

    plan = plan_fit(cache, "semobridge-t", shots=16, recipe=PAPER, overrides={"steps": 1000})
    task, meta = plan.task(cache, seeds=[1, 2, 3])           # the cache -> FewShotTask adapter (tasks.py)
    state = plan.fit(task)                                   # the registered method, timed (scoring.py)
    accuracy = score_queries(state, *load_test(cache))       # [S] test accuracy per seed (scoring.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from clipbridge.bridge.recipes import DEFAULT_RECIPE, UNIFORM, Recipe, resolve_recipe


@dataclass(frozen=True)
class FitPlan:
    """method; shots; recipe (the resolved bridge.recipes.Recipe); families and prompt_sets the task is built
    from; hparams passed to the method's fit (recipe values + overrides); overrides what records state the
    user changed: the --hparam values, and under the paper recipe the view families / prompt sets given in
    place of the recipe's ("view_families", "prompt_sets")."""

    method: str
    shots: int
    recipe: Recipe
    families: tuple[str, ...]
    prompt_sets: tuple[str, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """What records and saved runs state about the recipe."""
        return {"recipe": self.recipe.name, "recipe_rows": list(self.recipe.rows),
                "recipe_hparams": dict(self.recipe.hparams)}

    @property
    def reads_support(self) -> bool:
        """Whether the method reads the few-shot support set (bridge.registry.reads_support)."""
        from clipbridge.bridge.registry import get_method, reads_support

        return reads_support(get_method(self.method))

    def task(self, cache, seeds: Sequence[int], *, protocol: str = "clean", device: str = "cpu",
             dtype: str = "float32", loader=None):
        """(FewShotTask of the plan's shots, view families and prompt sets for `seeds`, its meta with the
        recipe's): evaluate.fitting.tasks.build_fit_task, the cache -> task adapter; without a support set
        for a method that reads none (`reads_support`)."""
        from clipbridge.evaluate.fitting.tasks import build_fit_task

        task, meta = build_fit_task(cache, shots=self.shots, seeds=seeds, families=self.families,
                                    prompt_sets=self.prompt_sets, protocol=protocol, device=device, dtype=dtype,
                                    loader=loader, validation=self.recipe.validation, support=self.reads_support)
        return task, {**meta, **self.meta()}

    def fit(self, task, precision: str = "fp32", calibration: str = "temperature", val_source: str | None = None):
        """The method fitted on `task` with the plan's hyper-parameters (a FittedState, S seeds), its matrix
        products at `precision` (bridge.precision), its probabilities' `calibration` fitted on the task's
        validation queries (`val_source`: the task meta's; evaluate.fitting.calibrate)."""
        from clipbridge.evaluate.fitting.scoring import fit_method

        return fit_method(self.method, task, self.hparams, precision, calibration, val_source)


def plan_fit(cache, method: str, shots: int, *, recipe: str = DEFAULT_RECIPE, families: Sequence[str] | None = None,
             prompts: Sequence[str] | None = None, overrides: dict[str, Any] | None = None) -> FitPlan:
    """The plan of fitting `method` at `shots` on `cache` (a ClipBridgeError / BridgeInputError, in one line,
    for anything the cache or the method cannot do: missing text sets, unknown hyper-parameters, ...)."""
    from clipbridge.bridge.registry import check_hparams, get_method
    from clipbridge.evaluate.fitting.tasks import check_families, check_prompt_sets

    overrides = dict(overrides or {})
    dataset = str(cache.attrs.get("dataset", ""))
    resolved = resolve_recipe(method, dataset, shots, recipe=recipe, families=families, prompts=prompts)
    prompt_sets = tuple(check_prompt_sets(cache, resolved))
    hparams = {**resolved.hparams, **overrides}
    check_hparams(get_method(method), hparams)
    check_families(cache, resolved.families)
    recorded = {**overrides, **replaced_inputs(resolved, families, prompts)}
    return FitPlan(method, int(shots), resolved, resolved.families, prompt_sets, hparams, recorded)


def replaced_inputs(resolved: Recipe, families: Sequence[str] | None,
                    prompts: Sequence[str] | None) -> dict[str, list[str]]:
    """Under the paper recipe, the view families and prompt sets given in place of the recipe's own (which
    the records then state as overrides: `fit --recipe paper --view-family tip` is not the paper's run);
    {} under the uniform recipe, whose inputs are the given ones by definition."""
    if resolved.name == UNIFORM:
        return {}
    own = resolve_recipe(resolved.method, resolved.dataset, resolved.shots, recipe=resolved.name)
    out = {}
    if families and tuple(families) != own.families:
        out["view_families"] = list(families)
    if prompts and tuple(prompts) != tuple(p.rstrip("?") for p in own.prompts):
        out["prompt_sets"] = list(prompts)
    return out
