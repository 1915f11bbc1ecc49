"""The modality gap, measured: what each bridge (SeMoBridge's B0, SeMoBridge-T's trained bridge, CMM's map)
does to CLIP's image embeddings, before and after mapping (the `analyze` command).

    metrics          pure metric functions (centroid gap, pair cosines, ROC-AUC, NN consistency, retrieval@K)
    representations  raw and bridged image embeddings of a fitted state
    measure          every metric of one representation
    plots            cosine histograms (SeMoBridge's Fig. 7) and the 2-D embedding map (CMM's Fig. 1)
    report           gap.json / gap.md
    analyze          the pipeline: bridges from saved runs or fitted on the spot, metrics, outputs
    command          the click command `analyze`
    speed            `python -m clipbridge.evaluate.analysis.speed`: seconds of an analysis of a 101-class cache
"""

DEFAULT_METHODS = ("semobridge", "semobridge-t", "cmm")
"""The bridges analysed when no run and no --methods are named."""

DEFAULT_MAX_IMAGES, DEFAULT_MAX_PAIRS = 10_000, 5_000
"""Test images sampled for the metrics, and positive/negative pairs sampled for the pair-cosine metrics."""
