"""Stage 1: run an open_clip model once over a dataset and its prompts, writing the HDF5 cache.

Modules: models (loading, EOS feature), datasets (registry + readers), prompts (prompt sets), views
(plain / mirrored / seeded random views), run (the resumable, torchrun-aware loop), distributed (torchrun
helpers), commands (`python cli.py extract`), speed (`python -m clipbridge.extract.speed` benchmark).
Nothing is imported here, so `import extract` stays cheap.
"""
