"""`clipbridge methods`: every method with its one-line description, its needs, and its hyper-parameters with
their defaults and allowed values (what `--hparam KEY=VALUE` accepts)."""
from __future__ import annotations

import json

import click



@click.command("methods")
@click.option("--json", "as_json", is_flag=True, help="print the methods as JSON.")
def methods(as_json: bool) -> None:
    """List every method: what it does, what a cache must hold for it, and its hyper-parameters."""
    from clipbridge.bridge.hparams import rules_of
    from clipbridge.bridge.registry import REGISTRY, method_summary
    from clipbridge.bridge.recipes import order_methods

    import clipbridge.bridge.methods  # noqa: F401  (registers every method)

    listing = []
    for name in order_methods(REGISTRY):
        method = REGISTRY[name]
        rules = rules_of(method)
        hparams = {key: {"default": value, "allowed": allowed_values(key, rules.get(key), method.defaults)}
                   for key, value in sorted(method.defaults.items())}
        listing.append({"name": name, "summary": method_summary(method),
                        "needs": sorted(getattr(method, "needs", ())), "hparams": hparams})
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for entry in listing:
        needs = f"  [needs: {', '.join(entry['needs'])}]" if entry["needs"] else ""
        click.echo(f"{entry['name']}: {entry['summary']}{needs}")
        for key, spec in entry["hparams"].items():
            allowed = f"  ({spec['allowed']})" if spec["allowed"] else ""
            click.echo(f"    {key} = {json.dumps(spec['default'])}{allowed}")


def allowed_values(key: str, rule, defaults: dict) -> str:
    """What `fit` accepts for hyper-parameter `key` (bridge.hparams's checks, in words): its choices, its range,
    a list's length, and the bound a `<name>_low` / `<name>_high` pair puts on each other."""
    from clipbridge.bridge.hparams import NON_NEGATIVE, Items

    default = defaults[key]
    if isinstance(rule, tuple):
        return "one of " + ", ".join(rule)
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, list):
        if isinstance(rule, Items):
            return rule.describe()
        return f"a list of {len(default)} numbers {(rule or NON_NEGATIVE).describe()} each"
    if isinstance(default, (int, float)):
        text = (rule or NON_NEGATIVE).describe()
        stem, _, end = key.rpartition("_")
        pair = {"low": ("high", "at most"), "high": ("low", "at least")}.get(end)
        if pair and f"{stem}_{pair[0]}" in defaults:
            text += f", {pair[1]} {stem}_{pair[0]}"
        return text
    return ""
