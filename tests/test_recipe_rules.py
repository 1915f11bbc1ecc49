"""The smaller rules of the paper recipes (RECIPES.md §2.3, §2.4, §2.6): GDA's ImageNet crops, APE-T's Food101
eps at 1-2 shots, and lpclip's min(K, 4) validation kept under --protocol paper."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import clipbridge as cb
from cache_factory import write_cache
from clipbridge.bridge.recipes import recipe_families, resolve_recipe
from clipbridge.cache.reader import open_cache
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.fitting.plan import plan_fit
from clipbridge.evaluate.fitting.tasks import build_fit_task
from clipbridge.extract.views import crop_box, get_family, view_seed


def test_gda_on_imagenet_uses_its_own_loaders_crops_of_scale_0_08_to_1():
    assert resolve_recipe("gda", "imagenet", 4).families == ("gda-imagenet",)
    assert "datasets/imagenet.py" in resolve_recipe("gda", "imagenet", 4).sources["families"]
    for dataset in ("dtd", "food101", "shapes"):
        assert resolve_recipe("gda", dataset, 4).families == ("tip",)
    assert resolve_recipe("tip-adapter", "imagenet", 4).families == ("tip",)      # Tip/APE keep (0.5, 1) there
    assert "gda-imagenet" in recipe_families("imagenet", [1, 16])                # what extract encodes
    assert "gda-imagenet" not in recipe_families("dtd", [1, 16])
    family, tip = get_family("gda-imagenet"), get_family("tip")
    assert (family.kind, family.copies, family.crop_scale, family.flip_p) == ("crop", 10, (0.08, 1.0), 0.5)
    assert family.crop_ratio == tip.crop_ratio and family.jitter is None


def test_gda_imagenet_crops_cover_less_of_the_image_than_tips():
    """The crops actually drawn (the extraction's crop_box, seeded per image and copy): GDA's ImageNet family
    reaches down to 8% of the image, Tip's never below about half."""
    def areas(name):
        family = get_family(name)
        out = []
        for item in range(20):
            for copy in range(family.copies):
                g = torch.Generator().manual_seed(view_seed(0, name, "train", f"img{item}", copy))
                _, _, h, w = crop_box(300, 200, family.crop_scale, family.crop_ratio, g)
                out.append(h * w / (300 * 200))
        return np.array(out)

    gda, tip = areas("gda-imagenet"), areas("tip")
    assert tip.min() > 0.45 and gda.min() < 0.2 and (gda < 0.45).mean() > 0.3


@pytest.mark.parametrize("shots,eps", [(1, 1e-2), (2, 1e-2), (4, 1e-3), (8, 1e-3), (16, 1e-3)])
def test_ape_t_on_food101_uses_eps_1e_2_at_one_and_two_shots(shots, eps):
    recipe = resolve_recipe("ape-t", "food101", shots)
    assert recipe.hparams["eps"] == eps
    assert recipe.hparams["lr"] == 1e-4 and recipe.hparams["epochs"] == 30      # the rest of food101's config
    assert resolve_recipe("ape-t", "oxford_pets", shots).hparams["eps"] == 2e-3  # other datasets: one eps
    assert "eps" not in resolve_recipe("ape", "food101", shots).hparams          # training-free APE has none


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = write_synthetic_cache(tmp_path_factory.mktemp("lpclip") / "dtd.h5", classes=3, train_per_class=10,
                                 dim=8, width=6, val=60, test=12, dataset="dtd")
    return open_cache(path)


@pytest.mark.parametrize("shots", [2, 8])
def test_lpclip_keeps_its_min_k_4_validation_under_protocol_paper(cache, shots):
    plan = plan_fit(cache, "linear-probe", shots)
    assert plan.recipe.validation == "sampled" and "linear_probe.py" in plan.recipe.sources["validation"]
    task, meta = plan.task(cache, [1, 2], protocol="paper")
    per_class = min(shots, 4)
    assert task.val.shape[:2] == (2, 3 * per_class)                        # the seeds' own draws, not [1, 60]
    assert meta["protocol"] == "paper" and meta["validation"] == "sampled" and meta["val_source"] == "val"
    clean, _ = build_fit_task(cache, shots=shots, seeds=[1, 2], families=plan.families, protocol="clean")
    assert torch.equal(task.val, clean.val) and torch.equal(task.val_labels, clean.val_labels)
    other, other_meta = plan_fit(cache, "tip-adapter", shots, recipe="uniform").task(cache, [1, 2], protocol="paper")
    assert other.val.shape[:2] == (1, 60) and other_meta["validation"] == "protocol"   # the others: whole split


def test_lpclip_under_protocol_paper_fits_and_records_its_validation(cache):
    run = cb.fit(cache, "linear-probe", shots=2, seeds=[1], protocol="paper", device="cpu")
    assert run.meta["validation"] == "sampled" and run.meta["protocol"] == "paper"
    (record,) = run.evaluate(device="cpu")
    assert record["validation"] == "sampled" and record["protocol"] == "paper"
    uniform = cb.fit(cache, "linear-probe", shots=2, seeds=[1], protocol="paper", recipe="uniform", device="cpu")
    assert uniform.meta["validation"] == "protocol" and uniform.meta["val_source"] == "val-full"


def test_lpclip_under_protocol_paper_needs_no_whole_val_split(tmp_path):
    cache = open_cache(write_cache(tmp_path / "c.h5", pairs=[(2, 1)], whole_val=False))     # extracted for clean
    task, meta = plan_fit(cache, "linear-probe", 2).task(cache, [1], protocol="paper")
    assert task.val.shape[:2] == (1, 6) and meta["validation"] == "sampled"
    with pytest.raises(ClipBridgeError, match="protocol paper validates on the whole val split"):
        plan_fit(cache, "tip-adapter", 2, recipe="uniform").task(cache, [1], protocol="paper")
