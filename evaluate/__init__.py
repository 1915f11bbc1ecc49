"""Stage 3: from a cache and a method to scores, records, tables and plots. Four rooms and the analysis:

    fitting/    one fit: plan (recipe -> what to fit), tasks (the cache -> FewShotTask adapter), scoring
                (fit, score, records), api (`clipbridge.fit`, Run), runs (saved states), predict, runner
                (the fit/evaluate commands' work), progress (terminal bars)
    reporting/  results.jsonl (records), tables, plots, the published accuracies, atomic files
    bench/      many fits: grid (the bench, torchrun-aware through distributed), sweep, demo, speed
    commands/   the click commands: main (fit, evaluate, predict, bench, demo), methods, recipe, published,
                analyze, and their option parsing (options)
    analysis/   the modality-gap analysis (`analyze`)
"""
