"""The command line of stage 3 (click): main (fit, evaluate, predict, bench, demo and their option
parsing), methods, recipe, analyze. cli.py gathers these with the other stages' commands."""
