"""clipbridge: few-shot CLIP adaptation on an HDF5 embedding cache.

The installed package is this repository's root: `clipbridge.extract` (stage 1: open_clip -> cache),
`clipbridge.cache` (the HDF5 format), `clipbridge.bridge` (stage 2: pure-tensor methods),
`clipbridge.evaluate` (stage 3: scoring, records, tables, plots) and `clipbridge.cli` (the command line).
Nothing heavy is imported here, so `import clipbridge` and `clipbridge --help` stay fast.
"""
