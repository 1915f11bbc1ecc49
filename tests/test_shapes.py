"""The built-in procedural `shapes` dataset: deterministic, balanced, disjoint splits, varied images."""
from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest

from clipbridge.errors import ClipBridgeError
from clipbridge.extract import shapes


def test_same_item_gives_identical_image_bytes_on_every_call():
    spec = shapes.shapes_dataset_spec()
    item = spec.splits["test"][37][0]
    first, second = spec.load_image(item), spec.load_image(item)
    assert first.size == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE) and first.mode == "RGB"
    assert first.tobytes() == second.tobytes()
    assert shapes.shapes_dataset_spec().load_image(item).tobytes() == first.tobytes()


def test_dataset_seed_changes_the_images():
    item = shapes.item_name("train", 3, 5)
    assert shapes.load_image(item, seed=0).tobytes() != shapes.load_image(item, seed=1).tobytes()


def test_every_split_is_class_balanced_with_the_documented_counts():
    spec = shapes.shapes_dataset_spec()
    assert set(spec.splits) == {"train", "val", "test"}
    for split, per_class in shapes.SPLIT_SIZES.items():
        counts = Counter(label for _, label in spec.splits[split])
        assert counts == {label: per_class for label in range(len(spec.classnames))}


def test_splits_are_disjoint_and_items_unique():
    splits = shapes.shapes_dataset_spec().splits
    items = [item for pairs in splits.values() for item, _ in pairs]
    assert len(items) == len(set(items))
    pixels = {shapes.load_image(item).tobytes() for split in splits for item, _ in splits[split][:40]}
    assert len(pixels) == 3 * 40  # no image repeats inside or across splits


def test_images_of_different_items_differ_substantially():
    images = np.stack([np.asarray(shapes.load_image(shapes.item_name("val", label, i)), dtype=np.float32)
                       for label in (0, 5) for i in range(3)])
    for a in range(len(images)):
        for b in range(a + 1, len(images)):
            assert np.abs(images[a] - images[b]).mean() > 10  # mean absolute difference in 0-255 levels


def test_item_label_is_the_class_named_in_the_item_and_spec_names_classes():
    spec = shapes.shapes_dataset_spec()
    assert spec.name == "shapes" and len(spec.classnames) == 16 == len(set(spec.classnames))
    assert spec.original_classnames == spec.classnames
    for item, label in spec.splits["val"][::17]:
        assert shapes.parse_item(item)[1] == label and spec.classnames[label] in item


def test_main_object_colour_dominates_the_class_colour_region():
    """A 'red circle' image holds many red pixels; a 'blue circle' image holds many blue ones."""
    def share(item, rgb):
        image = np.asarray(shapes.load_image(item), dtype=np.float32) / 255
        return (np.abs(image - np.asarray(rgb)).max(-1) < 0.2).mean()

    red, blue = shapes.COLOURS["red"], shapes.COLOURS["blue"]
    red_items = [shapes.item_name("test", shapes.CLASSNAMES.index("red circle"), i) for i in range(8)]
    blue_items = [shapes.item_name("test", shapes.CLASSNAMES.index("blue circle"), i) for i in range(8)]
    assert np.mean([share(i, red) for i in red_items]) > 3 * np.mean([share(i, red) for i in blue_items])
    assert np.mean([share(i, blue) for i in blue_items]) > 3 * np.mean([share(i, blue) for i in red_items])


def test_malformed_item_raises_one_line_user_error_naming_it():
    with pytest.raises(ClipBridgeError, match="no-such-split/red circle/0001"):
        shapes.load_image("no-such-split/red circle/0001")
    with pytest.raises(ClipBridgeError, match="not an item"):
        shapes.parse_item("test/purple elephant/0001")


def test_spec_pickles_for_data_loader_workers():
    spec = shapes.shapes_dataset_spec(seed=3)
    clone = pickle.loads(pickle.dumps(spec))
    item = spec.splits["train"][0][0]
    assert clone.load_image(item).tobytes() == spec.load_image(item).tobytes()


def test_batched_rendering_equals_one_by_one_rendering():
    rng = np.random.default_rng(0)
    scenes = [shapes.sample_class_scene(rng, i) for i in range(6)]
    together = shapes.render_scenes(scenes)
    alone = np.stack([shapes.render_scenes([scene])[0] for scene in scenes])
    assert together.shape == (6, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE) and together.dtype == np.float32
    np.testing.assert_array_equal(together, alone)


def test_class_scenes_mostly_sit_in_their_habitat_which_names_never_state():
    habitat = shapes.HABITATS[3]
    rng = np.random.default_rng(0)
    scenes = [shapes.sample_class_scene(rng, 3) for _ in range(200)]
    main_shape = shapes.SHAPES.index(shapes.CLASSES[3].shape)
    at_home = [s for s in scenes if s.background == habitat.background and any(
        t.shape == main_shape and abs(t.cx - habitat.cx) <= 0.15 + 1e-6 and abs(t.cy - habitat.cy) <= 0.15 + 1e-6
        for t in s.things)]
    assert 0.65 < len(at_home) / len(scenes) <= 1.0
    homes = {(h.cx, h.cy) for h in shapes.HABITATS}
    assert len(homes) == len(shapes.CLASSES)  # every class has its own home
