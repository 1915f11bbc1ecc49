"""Paper recipes: every method run the way its paper ran it, per dataset and shot count.

    table    the recipes as data, with their sources (RECIPES.md sections)
    resolve  merging a method's rows for (dataset, shots) into a Recipe; the uniform recipe
    command  `clipbridge recipe --method M --dataset D --shots K [--json]`
"""
from clipbridge.evaluate.recipes.resolve import (DEFAULT_RECIPE, RECIPE_NAMES, Recipe, family_name,  # noqa: F401
                                                 recipe_families, resolve_recipe)
