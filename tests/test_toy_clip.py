"""The tiny CLIP of the embedded default: captions, contrastive training, the committed checkpoint."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from clipbridge.extract import shapes, toy_clip


def test_pretraining_batches_are_deterministic_given_seed_and_step():
    images, captions = toy_clip.pretraining_batch(seed=4, step=7, batch_size=6)
    again_images, again_captions = toy_clip.pretraining_batch(seed=4, step=7, batch_size=6)
    other_images, other_captions = toy_clip.pretraining_batch(seed=4, step=8, batch_size=6)
    assert images.shape == (6, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    np.testing.assert_array_equal(images, again_images)
    assert captions == again_captions and captions != other_captions
    assert not np.array_equal(images, other_images)


def test_captions_name_the_main_objects_shape_and_vary_in_wording():
    rng = np.random.default_rng(0)
    pairs = [toy_clip.sample_pretraining_pair(rng) for _ in range(200)]
    for scene, caption in pairs:
        named = [shapes.SHAPES[t.shape] for t in scene.things if t.shape != shapes.BAR]
        assert any(shape in caption for shape in named), caption
    captions = [caption for _, caption in pairs]
    assert len(set(captions)) > 150
    assert any(caption.startswith("a photo of") for caption in captions)
    assert not any(" a orange" in c or " a ellow" in c or "striped striped" in c for c in captions)


def test_position_phrase_follows_the_object_position():
    rng = np.random.default_rng(0)
    assert "left" in toy_clip.position_phrase(rng, -0.6, 0.0)
    assert "bottom right" in toy_clip.position_phrase(rng, 0.6, 0.6) or "bottom" in toy_clip.position_phrase(
        rng, 0.6, 0.6)
    assert "top" in toy_clip.position_phrase(rng, 0.0, -0.7)


def test_a_few_training_steps_decrease_the_contrastive_loss():
    torch.set_num_threads(1)
    _, record = toy_clip.train_tiny_clip(steps=12, batch_size=16, seed=0, lr=2e-3, warmup=2, log_every=4,
                                         log=lambda _: None)
    first, last = record["losses"][0], record["losses"][-1]
    assert last < first - 0.1, record["losses"]


def test_training_is_deterministic_given_the_seed():
    torch.set_num_threads(1)
    runs = [toy_clip.train_tiny_clip(steps=3, batch_size=8, seed=seed, warmup=1, log_every=1, log=lambda _: None)
            for seed in (5, 5, 6)]
    (first, _), (again, _), (other, _) = runs
    assert torch.equal(first.text_projection, again.text_projection)
    assert torch.equal(first.visual.proj, again.visual.proj)
    assert not torch.equal(first.visual.proj, other.visual.proj)


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [toy_clip.learning_rate(s, steps=100, peak=1.0, warmup=10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


def test_committed_checkpoint_is_fp16_under_10mb_with_its_record():
    path = toy_clip.DEFAULT_CHECKPOINT
    assert path.stat().st_size <= 10 * 1024 * 1024
    state = load_file(str(path))
    assert {tensor.dtype for tensor in state.values()} == {torch.float16}
    assert "logit_scale" in state and "text_projection" in state
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["train_seconds"] <= 600 and record["bytes"] == path.stat().st_size
    assert record["command"].startswith("python -m clipbridge.extract.toy_clip train")


def test_committed_checkpoint_loads_through_open_clip_pretrained_file_into_fp32():
    toy_clip.register_config()
    model, _, preprocess = open_clip.create_model_and_transforms(
        toy_clip.MODEL_NAME, pretrained=str(toy_clip.DEFAULT_CHECKPOINT))
    state = load_file(str(toy_clip.DEFAULT_CHECKPOINT))
    assert model.text_projection.dtype == torch.float32
    assert torch.equal(model.text_projection.data, state["text_projection"].float())
    assert model.logit_scale.exp().item() > 10
    image = preprocess(shapes.load_image(shapes.item_name("test", 0, 0)))
    assert image.shape == (3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)


def test_committed_checkpoint_zero_shot_is_well_above_chance_on_shapes_test():
    torch.set_num_threads(1)
    model, _, tokenizer = toy_clip.load_tiny_clip()
    accuracy = toy_clip.zero_shot_accuracy(model, tokenizer, split="test", per_class=10)
    assert accuracy > 2.5 / len(shapes.CLASSES)


def test_train_command_rejects_an_output_open_clip_cannot_load(tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(toy_clip.main, ["train", "--steps", "1", "--out", str(tmp_path / "w.pt")])
    assert isinstance(result.exception, toy_clip.ClipBridgeError) and "must end in .safetensors" in str(
        result.exception)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_train_command_writes_loadable_fp16_checkpoint_and_its_record(tmp_path):
    from click.testing import CliRunner

    out = tmp_path / "tiny.safetensors"
    result = CliRunner().invoke(toy_clip.main, ["train", "--steps", "2", "--batch-size", "4", "--seed", "1",
                                                "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]  # no temp left
    assert {t.dtype for t in load_file(str(out)).values()} == {torch.float16}
    record = json.loads((tmp_path / "tiny.json").read_text())
    assert record["steps"] == 2 and record["seed"] == 1 and len(record["losses"]) == 1
    assert set(record["zero_shot_accuracy"]) == {"val", "test"}
    model, _, _ = toy_clip.load_tiny_clip(out)
    assert model.visual.proj.dtype == torch.float32
