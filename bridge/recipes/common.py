"""What several methods' recipe rows share: view-family lists and the sources of the text sets.

A recipe module (one per method, named after it: tip_adapter_f.py for "tip-adapter-f") holds ROWS, a dict
keyed by "default", a dataset ("dtd") or a dataset at a shot count ("dtd@16"); each row a dict of
    families  view families of the support images, in order; "name:n" = the first n copies of a family
    prompts   text sets of the cache; a trailing "?" = used when the cache has it; "a|b" = a, else b; a
              method's own CuPL sentences are the named set "cupl:<whose>" (CUPL_SOURCES; extract --cupl
              NAME=FILE); outside the 11 datasets "cupl:<whose>|cupl?" also takes a cache's one unnamed set
    validation  "sampled": validate on min(K, 4) images per class under every protocol (lpclip); absent:
              the protocol decides (METHOD.md §6)
    hparams   hyper-parameters of the method's fit (bridge/methods/*.py defaults otherwise)
    source    where the row's values come from; `<field>_source` when one field has another source
resolve.py merges default <- dataset <- dataset@shots. The datasets are the CoOp names of extract/datasets;
any other dataset (imagefolder, splitfile, shapes) gets the default row of each method.
"""
from __future__ import annotations

COOP_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
PLAIN, FLIP = ["plain"], ["plain", "flip"]
R05J, R08, R08J = ["plain", "semo-r0.5-j"], ["plain", "semo-r0.8"], ["plain", "semo-r0.8-j"]
COOP_TEXT = "RECIPES.md §1 (templates: the CoOp template; ImageNet: the 7 select templates)"

#: The CuPL sentence sets the paper recipes name (text set "cupl:<key>"): whose file each one must hold
#: (RECIPES.md §1: SeMoBridge's and APE's CuPL files are two different GPT-3 generations).
CUPL_SOURCES = {
    "ape": "APE's gpt3_prompts/CuPL_prompts_<dataset>.json, yangyangyang127/APE",
    "semobridge": "SeMoBridge's TEXTS/<dataset>/cupl_full.json, christti98/semobridge",
}
APE_CUPL, SEMOBRIDGE_CUPL = "cupl:ape", "cupl:semobridge"
