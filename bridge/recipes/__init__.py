"""Paper recipes: every method run the way its paper ran it, per dataset and shot count, as data.

    <method>.py  one module per method (tip_adapter_f.py for "tip-adapter-f"): ROWS, its recipe rows, each
                 with its source (RECIPES.md sections); common.py: what several share and the row fields
    table        RECIPES = {method: ROWS} in display order: METHOD_NAMES (the methods, no torch needed),
                 order_methods
    resolve      merging a method's rows for (dataset, shots) into a Recipe; the uniform recipe; the recipe
                 names PAPER and UNIFORM
The `recipe` command is evaluate/commands/recipe.py.
"""
from clipbridge.bridge.recipes.resolve import (DEFAULT_RECIPE, PAPER, RECIPE_NAMES, UNIFORM, Recipe,  # noqa: F401
                                               family_name, parse_family, recipe_families, resolve_recipe)
from clipbridge.bridge.recipes.table import METHOD_NAMES, RECIPES, order_methods  # noqa: F401
