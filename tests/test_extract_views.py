"""extract.views: named view families, exact and deterministic per (seed, family, split, item, copy)."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.views import (BUILTIN_FAMILIES, ViewMaker, crop_box, describe_families, get_family,
                                      view_seed)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _preprocess(image):
    return TF.normalize(TF.to_tensor(TF.center_crop(TF.resize(image, 32), 32)), MEAN, STD)


def _image(width: int = 48, height: int = 40) -> Image.Image:
    gradient = torch.linspace(0, 255, width).repeat(height, 1)
    stack = torch.stack([gradient, gradient.flip(1), torch.full_like(gradient, 90)], dim=-1)
    return Image.fromarray(stack.to(torch.uint8).numpy())


MAKER = ViewMaker(_preprocess, 32, MEAN, STD, seed=0)


def test_plain_is_the_model_preprocess_and_flip_its_mirror():
    torch.testing.assert_close(MAKER.views(_image(), get_family("plain"), "train", "a.jpg")[0], _preprocess(_image()))
    torch.testing.assert_close(MAKER.views(_image(), get_family("flip"), "train", "a.jpg")[0],
                               _preprocess(TF.hflip(_image())))


def test_the_builtin_families_follow_their_papers_recipes():
    tip = get_family("tip")
    assert (tip.copies, tip.crop_scale, tip.crop_ratio, tip.flip_p, tip.jitter) == (10, (0.5, 1.0), (0.75, 4 / 3),
                                                                                      0.5, None)
    semo = get_family("semo-r0.8-j")
    assert (semo.copies, semo.crop_scale, semo.crop_ratio, semo.jitter) == (10, (0.8, 1.0), (1.0, 1.0),
                                                                             (0.4, 0.4, 0.4, 0.1))
    assert get_family("semo-r0.5").jitter is None and get_family("coop-rrc").crop_scale == (0.08, 1.0)
    assert {"plain", "flip", "tip", "semo-r0.5-j", "semo-r0.5", "semo-r0.8-j", "semo-r0.8"} <= set(BUILTIN_FAMILIES)
    assert len(describe_families()) == len(BUILTIN_FAMILIES)


def test_random_views_are_identical_for_the_same_seed_family_item():
    a = MAKER.views(_image(), get_family("tip"), "train", "x/7.jpg")
    torch.manual_seed(123)  # global RNG state must not matter
    b = MAKER.views(_image(), get_family("tip"), "train", "x/7.jpg")
    assert a.shape == (10, 3, 32, 32) and torch.equal(a, b)


def test_two_families_of_the_same_image_differ_and_so_do_items_copies_and_seeds():
    tip = MAKER.views(_image(), get_family("tip"), "train", "x/7.jpg")
    semo = MAKER.views(_image(), get_family("semo-r0.5-j"), "train", "x/7.jpg")
    assert not torch.equal(tip, semo)
    assert not torch.equal(tip[2], tip[3])
    assert not torch.equal(tip, MAKER.views(_image(), get_family("tip"), "train", "x/8.jpg"))
    other_seed = ViewMaker(_preprocess, 32, MEAN, STD, seed=1)
    assert not torch.equal(tip, other_seed.views(_image(), get_family("tip"), "train", "x/7.jpg"))
    assert view_seed(0, "tip", "train", "x/7.jpg", 2) != view_seed(0, "tip", "train", "x/7.jpg", 3)


def test_the_first_copies_do_not_depend_on_how_many_are_made():
    """SeMoBridge's DTD 16-shot recipe uses 5 copies of R(0.8)+J: the first 5 of the 10-copy family."""
    family = get_family("semo-r0.8-j")
    five = type(family)(**{**family.__dict__, "copies": 5})
    ten = MAKER.views(_image(), family, "train", "d.jpg")
    assert torch.equal(MAKER.views(_image(), five, "train", "d.jpg"), ten[:5])


@pytest.mark.parametrize("name", ["tip", "semo-r0.5-j", "semo-r0.8", "coop-rrc"])
@pytest.mark.parametrize("size", [(48, 40), (200, 30)])
def test_a_copy_equals_torchvisions_transforms_under_the_copys_seed(name, size):
    """The exact recipe: Compose([RandomResizedCrop, RandomHorizontalFlip, ColorJitter, ToTensor, Normalize])
    after torch.manual_seed(view_seed(...)) gives the same tensor."""
    family = get_family(name)
    image = _image(*size)
    steps = [transforms.RandomResizedCrop(32, scale=family.crop_scale, ratio=family.crop_ratio,
                                          interpolation=transforms.InterpolationMode.BICUBIC),
             transforms.RandomHorizontalFlip(family.flip_p)]
    if family.jitter:
        steps.append(transforms.ColorJitter(*family.jitter))
    pipeline = transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ours = MAKER.views(image, family, "train", "img/3.jpg")
    for copy in range(family.copies):
        torch.manual_seed(view_seed(0, name, "train", "img/3.jpg", copy))
        assert torch.equal(ours[copy], pipeline(image)), copy


def test_crop_box_falls_back_to_torchvisions_central_crop():
    generator = torch.Generator().manual_seed(0)
    # scale above 1 can never fit: every attempt fails and the fallback decides
    assert crop_box(200, 30, (5.0, 6.0), (3 / 4, 4 / 3), generator) == (0, 80, 30, 40)
    assert crop_box(30, 200, (5.0, 6.0), (3 / 4, 4 / 3), generator) == (80, 0, 40, 30)
    assert crop_box(40, 40, (5.0, 6.0), (1.0, 1.0), generator) == (0, 0, 40, 40)


def test_recipe_is_recorded_with_its_seed_and_source():
    recipe = get_family("tip").recipe(seed=3)
    assert recipe["seed"] == 3 and recipe["family"] == "tip" and "RECIPES.md" in recipe["source"]
    assert "RandomResizedCrop" in recipe["describe"] and recipe["params"]["copies"] == 10


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ClipBridgeError, match="unknown view family 'tipp'; known: plain, flip, tip"):
        get_family("tipp")
