"""`clipbridge recipe`: print the resolved recipe of a method on a dataset at a shot count."""
from __future__ import annotations

import json

import click

from clipbridge.bridge.recipes import DEFAULT_RECIPE, RECIPE_NAMES


@click.command("recipe")
@click.option("--method", required=True, help="method name (see `clipbridge methods`).")
@click.option("--dataset", required=True, help="dataset name (CoOp names; any other gets the default rows).")
@click.option("--shots", required=True, type=click.IntRange(1, None), help="shots per class.")
@click.option("--recipe", "recipe_name", type=click.Choice(RECIPE_NAMES), default=DEFAULT_RECIPE, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the recipe as JSON.")
def recipe(method, dataset, shots, recipe_name, as_json) -> None:
    """Show which view families, prompt sets and hyper-parameters a fit of METHOD on DATASET with SHOTS uses,
    and where each value comes from."""
    from clipbridge.bridge.registry import check_hparams, get_method
    from clipbridge.bridge.recipes.resolve import resolve_recipe

    resolved = resolve_recipe(method, dataset, shots, recipe=recipe_name)
    hparams = check_hparams(get_method(method), resolved.hparams)
    if as_json:
        click.echo(json.dumps({**resolved.describe(), "resolved_hparams": hparams}, indent=2, sort_keys=True))
        return
    click.echo(f"{resolved.name} recipe of {method} on {dataset}, {shots} shot(s)"
               + (f" (rows: {', '.join(resolved.rows)})" if resolved.rows else ""))
    click.echo(f"  view families  {', '.join(resolved.families)}")
    click.echo(f"      from       {resolved.sources.get('families', resolved.sources.get('all', 'default'))}")
    prompts = ", ".join(p.rstrip("?").replace("|", " else ") + (" (if the cache has it)" if p.endswith("?") else "")
                        for p in resolved.prompts)
    click.echo(f"  prompt sets    {prompts or 'every text set of the cache'}")
    click.echo(f"      from       {resolved.sources.get('prompts', resolved.sources.get('all', 'default'))}")
    if resolved.validation != "protocol":
        click.echo(f"  validation     {resolved.validation}: min(K, 4) images per class under every protocol")
        click.echo(f"      from       {resolved.sources.get('validation', 'default')}")
    click.echo("  hyper-parameters (recipe values marked *, the rest the method's defaults):")
    for name in sorted(hparams):
        mark = "*" if name in resolved.hparams else " "
        click.echo(f"   {mark} {name} = {json.dumps(hparams[name])}"
                   + (f"   [{resolved.sources[f'hparams.{name}']}]" if name in resolved.hparams else ""))
