"""Stage 3: from a cache and a method to scores, records, tables and plots.

tasks (cache -> FewShotTask, test queries), scoring (fit, score, records), fitting (fit/evaluate
commands' work), runs (saved fitted states), records (results.jsonl), tables and plots, bench (the grid,
torchrun-aware through distributed), sweep (bench over the values of one hyper-parameter or prompt choice),
analysis/ (the modality gap: `analyze`), demo, speed, commands (click: fit, evaluate, bench, demo).
"""
