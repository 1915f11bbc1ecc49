"""The command line of stage 3 (click): main (fit, evaluate, predict, bench, demo), options (what those and
analyze read from their options before any work), methods, recipe, published, analyze, export. cli.py gathers them
with the other stages' commands."""
