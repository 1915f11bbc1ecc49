"""What one fit of a method on a cache uses, decided before any work: the recipe's view families and
prompt sets, the hyper-parameters (recipe values, then the user's --hparam overrides), all checked against
the cache and the method.

    plan = plan_fit(cache, "semobridge-t", shots=16, recipe="paper", overrides={"steps": 1000})
    task, meta = build_fit_task(cache, shots=16, seeds=[1, 2, 3], families=plan.families,
                                prompt_sets=plan.prompt_sets, ...)
    state = fit_method(plan.method, task, plan.hparams)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from clipbridge.bridge.recipes import DEFAULT_RECIPE, Recipe, resolve_recipe


@dataclass(frozen=True)
class FitPlan:
    """method; recipe (the resolved bridge.recipes.Recipe); families and prompt_sets the task is built
    from; hparams passed to the method's fit (recipe values + overrides); overrides the user's --hparam."""

    method: str
    recipe: Recipe
    families: tuple[str, ...]
    prompt_sets: tuple[str, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """What records and saved runs state about the recipe."""
        return {"recipe": self.recipe.name, "recipe_rows": list(self.recipe.rows),
                "recipe_hparams": dict(self.recipe.hparams)}


def plan_fit(cache, method: str, shots: int, *, recipe: str = DEFAULT_RECIPE, families: Sequence[str] | None = None,
             prompts: Sequence[str] | None = None, overrides: dict[str, Any] | None = None) -> FitPlan:
    """The plan of fitting `method` at `shots` on `cache` (a ClipBridgeError / BridgeInputError, in one line,
    for anything the cache or the method cannot do: missing text sets, unknown hyper-parameters, ...)."""
    from clipbridge.bridge.registry import check_hparams, get_method
    from clipbridge.evaluate.fitting.tasks import check_families

    overrides = dict(overrides or {})
    dataset = str(cache.attrs.get("dataset", ""))
    resolved = resolve_recipe(method, dataset, shots, recipe=recipe, families=families, prompts=prompts)
    prompt_sets = tuple(resolved.prompt_sets(cache.text_sets, f"cache {cache.path}"))
    hparams = {**resolved.hparams, **overrides}
    check_hparams(get_method(method), hparams)
    check_families(cache, resolved.families)
    return FitPlan(method, resolved, resolved.families, prompt_sets, hparams, overrides)
