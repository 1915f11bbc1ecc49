"""extract.views: plain / mirrored / seeded random views, deterministic per (seed, split, row, view)."""
from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from clipbridge.extract.views import ViewRecipe, make_views, view_seed

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _preprocess(image):
    return TF.normalize(TF.to_tensor(TF.center_crop(TF.resize(image, 32), 32)), MEAN, STD)


def _image() -> Image.Image:
    gradient = torch.linspace(0, 255, 48).repeat(40, 1)
    stack = torch.stack([gradient, gradient.flip(1), torch.full_like(gradient, 90)], dim=-1)
    return Image.fromarray(stack.to(torch.uint8).numpy())


def _recipe(views=5, seed=0):
    return ViewRecipe(views=views, seed=seed, size=32, mean=MEAN, std=STD)


def test_view_zero_is_the_preprocess_and_view_one_its_mirror():
    views = make_views(_image(), _preprocess, _recipe(), "train", 3)
    assert views.shape == (5, 3, 32, 32)
    torch.testing.assert_close(views[0], _preprocess(_image()))
    torch.testing.assert_close(views[1], _preprocess(TF.hflip(_image())))


def test_random_views_are_identical_for_the_same_seed_split_row():
    a = make_views(_image(), _preprocess, _recipe(), "train", 7)
    torch.manual_seed(123)  # global RNG state must not matter
    b = make_views(_image(), _preprocess, _recipe(), "train", 7)
    assert torch.equal(a, b)


def test_random_views_differ_across_rows_views_and_seeds():
    a = make_views(_image(), _preprocess, _recipe(), "train", 7)
    assert not torch.equal(a[2], a[3])
    assert not torch.equal(a[2:], make_views(_image(), _preprocess, _recipe(), "train", 8)[2:])
    assert not torch.equal(a[2:], make_views(_image(), _preprocess, _recipe(seed=1), "train", 7)[2:])
    assert not torch.equal(a[2:], make_views(_image(), _preprocess, _recipe(), "val", 7)[2:])
    assert view_seed(0, "train", 7, 2) != view_seed(0, "train", 7, 3)


def test_test_split_gets_the_plain_view_only():
    views = make_views(_image(), _preprocess, _recipe(), "test", 0)
    assert views.shape == (1, 3, 32, 32)
    assert _recipe().for_split("test").views == 1 and _recipe().for_split("val").views == 5


def test_recipe_is_recorded_as_attributes():
    attrs = _recipe().attrs()
    assert attrs["seed"] == 0 and "RandomResizedCrop(32" in attrs["views_recipe"]
    assert attrs["views_params"]["jitter"] == (0.4, 0.4, 0.4, 0.1)
