"""extract.models: loading by name / checkpoint, the EOS feature identity, clear errors."""
from __future__ import annotations

import open_clip
import pytest
import torch
from torch import nn

from clipbridge.errors import ClipBridgeError
from clipbridge.extract import models
from clipbridge.extract.models import encode_text_with_eos, file_sha256, load_model, logit_scale, text_head

TINY = "clipbridge-tiny"


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY, "random", device="cpu")


def test_project_config_is_registered_with_open_clip(tiny):
    assert TINY in open_clip.list_models()
    assert tiny.image_size == open_clip.get_model_config(TINY)["vision_cfg"]["image_size"]


def test_eos_times_text_projection_equals_encode_text(tiny):
    tokens = tiny.tokenizer(["a photo of a daffodil.", "itap of a snowdrop.", "x"])
    projected, eos = encode_text_with_eos(tiny.model, tokens)
    width = open_clip.get_model_config(TINY)["text_cfg"]["width"]
    assert eos.shape == (3, width)
    with torch.no_grad():
        expected = tiny.model.encode_text(tokens)
        torch.testing.assert_close(eos @ text_head(tiny.model).weight, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(projected, expected, rtol=0, atol=0)


def _custom_text_clip(proj_bias: bool) -> nn.Module:
    """A CustomTextCLIP whose text tower ends in an nn.Linear projection (W=32 -> D=24)."""
    vision = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16}
    text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
            "proj_type": "linear", "proj_bias": proj_bias, "pool_type": "argmax"}
    torch.manual_seed(0)
    model = open_clip.model.CustomTextCLIP(24, vision, text).eval()
    if not proj_bias:  # open_clip keeps a bias-free projection as a Parameter; make it an nn.Linear
        del model.text.text_projection
        model.text.text_projection = nn.Linear(32, 24, bias=False)
    return model


def test_eos_identity_holds_for_a_linear_projection_without_bias():
    model = _custom_text_clip(proj_bias=False)
    assert isinstance(model.text.text_projection, nn.Linear)
    tokens = open_clip.tokenize(["a photo of a cat.", "dog"], context_length=16)
    projected, eos = encode_text_with_eos(model, tokens)
    with torch.no_grad():
        torch.testing.assert_close(eos @ text_head(model).weight, model.encode_text(tokens),
                                   rtol=1e-5, atol=1e-6)
    assert eos.shape == (2, 32) and projected.shape == (2, 24)


def test_linear_projection_with_bias_is_an_affine_head_whose_identity_holds():
    model = _custom_text_clip(proj_bias=True)
    with torch.no_grad():
        model.text.text_projection.bias.normal_()
    tokens = open_clip.tokenize(["a photo of a cat.", "dog"], context_length=16)
    head = models.text_head(model)
    assert (head.projection, head.pooling) == ("affine", "argmax")
    projected, eos = encode_text_with_eos(model, tokens, head)
    torch.testing.assert_close(eos @ head.weight + head.bias, projected, rtol=1e-5, atol=1e-6)
    assert torch.equal(head.bias, model.text.text_projection.bias)


def test_unknown_model_name_says_how_to_list_names():
    with pytest.raises(ClipBridgeError, match="unknown model 'ViT-Nope'.*--list-models"):
        load_model("ViT-Nope", "random", device="cpu")


def test_unknown_pretrained_tag_lists_tags_and_the_local_file_option():
    with pytest.raises(ClipBridgeError, match="unknown pretrained tag 'nope'.*openai.*--pretrained /path"):
        load_model("ViT-B-16", "nope", device="cpu")


def test_missing_checkpoint_file_names_the_path(tmp_path):
    with pytest.raises(ClipBridgeError, match="checkpoint file not found: .*missing.pt"):
        load_model(TINY, str(tmp_path / "missing.pt"), device="cpu")


def test_checkpoint_file_loads_and_records_name_and_sha256(tiny, tmp_path):
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in tiny.model.state_dict().items()}
    path = tmp_path / "tiny-ckpt.pt"
    torch.save(state, path)
    loaded = load_model(TINY, str(path), device="cpu")
    assert loaded.pretrained_id == "tiny-ckpt.pt"
    assert loaded.pretrained_sha256 == file_sha256(path) and len(loaded.pretrained_sha256) == 64
    torch.testing.assert_close(loaded.model.visual.conv1.weight, tiny.model.visual.conv1.weight + 0.01)
    assert logit_scale(loaded.model) == pytest.approx(float(torch.exp(state["logit_scale"])))


def test_random_init_is_the_same_model_in_every_load(tiny):
    again = load_model(TINY, "random", device="cpu")
    for (name, a), (_, b) in zip(tiny.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_weights_that_cannot_be_fetched_give_one_line_naming_the_local_file_option(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': Name or service not known\ntraceback")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ClipBridgeError, match=r"could not fetch pretrained weights 'openai' for RN50: no network "
                                              r".*--pretrained /path/to/checkpoint.pt") as info:
        load_model("RN50", "openai", device="cpu")
    assert "\n" not in str(info.value)


def test_without_network_the_hub_is_searched_offline_instead_of_retrying(monkeypatch):
    import huggingface_hub.constants as hub

    seen, before = [], hub.is_offline_mode()

    def record_offline_mode(*args, **kwargs):
        seen.append(hub.is_offline_mode())
        raise RuntimeError("Failed to download weights: not in the local cache")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", record_offline_mode)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ClipBridgeError):
        load_model("RN50", "openai", device="cpu")
    assert seen == [True] and hub.is_offline_mode() == before  # offline only around the fetch


def test_the_bundled_tiny_weights_are_a_tag_and_the_models_default():
    from clipbridge.cache.schema import default_cache_path
    from clipbridge.extract.models import BUNDLED_WEIGHTS, default_pretrained, pretrained_tags

    assert default_pretrained("clipbridge-tiny") == "shapes" and "shapes" in pretrained_tags("clipbridge-tiny")
    loaded = load_model("clipbridge-tiny", "shapes", device="cpu")
    assert loaded.pretrained_id == "shapes"
    assert loaded.pretrained_sha256 == file_sha256(BUNDLED_WEIGHTS["clipbridge-tiny"]["shapes"])
    assert default_cache_path("clipbridge-tiny", "shapes", "shapes").parent.name == "clipbridge-tiny--shapes"
    assert default_pretrained("ViT-B-16") == "openai"


def test_a_checkpoint_of_another_architecture_names_the_first_mismatched_keys(tmp_path):
    tiny = load_model("clipbridge-tiny", "random", device="cpu")
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    with pytest.raises(ClipBridgeError) as info:
        load_model("clipbridge-tiny-affine", str(path), device="cpu")
    message = str(info.value)
    assert "\n" not in message and "the checkpoint is for another architecture" in message
    assert "missing keys text.text_projection.weight" in message and "unexpected keys visual." in message
