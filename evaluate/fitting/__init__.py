"""One fit, from a cache to scores: plan -> tasks (cache -> FewShotTask) -> scoring (fit, score, records);
api (the Python API), runs (saved fitted states), predict (new images), export (a run as one TorchScript
file), runner (the fit/evaluate commands)."""
