"""CMM's recipe. CMM has no public code (RECIPES.md §2.7): ours. It maps images into the text space like
SeMoBridge, so it gets SeMoBridge's views and text per dataset: the two cross-modal mappings see identical
inputs."""
from clipbridge.bridge.recipes.semobridge import semobridge_rows

ROWS = {key: {**row, "hparams_source": "ours (no official CMM code, RECIPES.md §2.7): METHOD.md §4 defaults",
              "source": "ours (no official CMM code, RECIPES.md §2.7): SeMoBridge's inputs, " + row["source"]}
        for key, row in semobridge_rows({}).items()}
