"""extract.models on every kind of open_clip text tower: what a cache can hold besides encode_text.

The project's tiny configs stand in for the families (random weights, built-in tokenizer, no download):
clipbridge-tiny-affine is SigLIP-like (nn.Linear projection with a bias, last-token pooling, bidirectional
attention, a logit bias), clipbridge-tiny-coca is CoCa-like (a CLS token appended to the text, ln_final
after pooling, a multimodal decoder). Hugging Face tokenizers (SigLIP's own) are simulated missing.
"""
from __future__ import annotations

import open_clip
import pytest
import torch
from torch import nn

from clipbridge.errors import ClipBridgeError
from clipbridge.extract import models
from clipbridge.extract.models import checked_text_head, encode_text_with_eos, load_model, logit_bias, text_head

PROMPTS = ["a photo of a daffodil.", "itap of a snowdrop.", "x"]


@pytest.fixture(scope="module")
def affine():
    loaded = load_model("clipbridge-tiny-affine", "random", device="cpu")
    with torch.no_grad():           # open_clip initialises the bias to zero; a trained one is not
        loaded.model.text.text_projection.bias.normal_(generator=torch.Generator().manual_seed(0))
    return loaded


@pytest.fixture(scope="module")
def coca():
    return load_model("clipbridge-tiny-coca", "random", device="cpu")


def test_siglip_like_tower_stores_pooled_feature_wt_bias_and_logit_bias(affine):
    head = text_head(affine.model)
    assert (head.pooling, head.projection, head.has_eos) == ("last", "affine", True)
    tokens = affine.tokenizer(PROMPTS)
    projected, eos = encode_text_with_eos(affine.model, tokens, head)
    with torch.no_grad():
        expected = affine.model.encode_text(tokens)
    torch.testing.assert_close(projected, expected, rtol=0, atol=0)
    torch.testing.assert_close(eos @ head.weight + head.bias, expected, rtol=1e-5, atol=1e-5)
    assert head.bias.abs().min() > 0 and not torch.allclose(eos @ head.weight, expected, atol=1e-2)
    assert logit_bias(affine.model) == -10.0 and logit_bias(load_model("clipbridge-tiny", "random").model) is None


def test_coca_like_tower_stores_its_pooled_cls_feature_and_raw_embeddings(coca):
    head = coca.text_head
    assert (head.pooling, head.projection, head.has_eos, head.dim) == ("cls-appended", "matrix", True, 96)
    tokens = coca.tokenizer(PROMPTS)
    projected, eos = encode_text_with_eos(coca.model, tokens, head)
    with torch.no_grad():
        torch.testing.assert_close(projected, coca.model.encode_text(tokens, normalize=False), rtol=0, atol=0)
        latent, _ = coca.model.text(tokens)
        # CoCa's encode_text normalises by default; the cache stores the raw output, as for CLIP
        assert not torch.allclose(projected.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(eos @ head.weight, latent, rtol=1e-5, atol=1e-6)
    assert eos.shape == (3, 64)


def test_tower_without_projection_is_an_identity_projection():
    vision = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16}
    text = {"context_length": 16, "vocab_size": 49408, "width": 24, "heads": 2, "layers": 1, "proj_type": "none"}
    torch.manual_seed(0)
    model = open_clip.model.CustomTextCLIP(24, vision, text).eval()
    tokens = open_clip.tokenize(["a photo of a cat.", "dog"], context_length=16)
    head = checked_text_head(model, tokens)
    assert (head.projection, head.has_eos, head.dim) == ("identity", True, 24)
    projected, eos = encode_text_with_eos(model, tokens, head)
    torch.testing.assert_close(eos, projected, rtol=0, atol=0)


def test_a_failed_identity_drops_the_eos_features_with_a_note(affine, monkeypatch):
    real = text_head(affine.model)
    monkeypatch.setattr(models, "text_head", lambda model: real.__class__(
        real.pooling, real.projection, real.weight * 1.01, real.bias))
    head = checked_text_head(affine.model, affine.tokenizer(PROMPTS))
    assert not head.has_eos and head.bias is None and head.dim == 96
    assert "differs from encode_text" in head.note
    with pytest.raises(ClipBridgeError, match="differs from encode_text"):
        encode_text_with_eos(affine.model, affine.tokenizer(PROMPTS), models.text_head(affine.model))


def _hf_tower(proj_type: str):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    text = open_clip.hf_model.HFTextEncoder("bert-tiny-offline", output_dim=24, config=config,
                                            pooler_type="cls_pooler", proj_type=proj_type, pretrained=False)
    model = nn.Module()
    model.text = text.eval()
    model.encode_text = lambda tokens, normalize=False: text(tokens)
    return model


@pytest.mark.parametrize("proj_type, stored", [("linear", True), ("mlp", False)])
def test_hugging_face_towers_store_eos_only_behind_a_linear_projection(proj_type, stored):
    model = _hf_tower(proj_type)
    tokens = torch.randint(1, 100, (3, 12))
    head = checked_text_head(model, tokens)
    assert head.pooling == "hf:ClsPooler" and head.has_eos == stored and head.dim == 24
    projected, eos = encode_text_with_eos(model, tokens, head)
    if stored:
        torch.testing.assert_close(eos @ head.weight, projected, rtol=1e-5, atol=1e-6)
    else:
        assert eos is None and "Sequential, not a linear or affine map" in head.note


def _never_create(*args, **kwargs):
    raise AssertionError("the model was created before the tokenizer was checked")


def test_missing_transformers_for_a_hugging_face_tokenizer_is_one_line_naming_the_extra(monkeypatch):
    def no_transformers(name, **kwargs):
        raise ModuleNotFoundError("No module named 'transformers'")

    monkeypatch.setattr(open_clip, "get_tokenizer", no_transformers)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", _never_create)
    with pytest.raises(ClipBridgeError, match=r"ViT-B-16-SigLIP .*'timm/ViT-B-16-SigLIP'.*transformers: "
                                              r"pip install 'clipbridge\[siglip\]'") as info:
        load_model("ViT-B-16-SigLIP", "random", device="cpu")
    assert "\n" not in str(info.value)


def test_missing_tokenizer_files_offline_are_one_line_saying_so(monkeypatch):
    import huggingface_hub.constants as hub

    seen = []

    def not_cached(name, **kwargs):   # what transformers raises offline when the files are not cached
        seen.append(hub.HF_HUB_OFFLINE)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                      "them in the cached files.\nCheck your internet connection")

    monkeypatch.setattr(open_clip, "get_tokenizer", not_cached)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", _never_create)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ClipBridgeError, match=r"cannot load the tokenizer 'timm/ViT-B-16-SigLIP2' of model "
                                              r"ViT-B-16-SigLIP2: no network and its files are not in the local "
                                              r"Hugging Face cache; .*HF_HOME") as info:
        load_model("ViT-B-16-SigLIP2", "random", device="cpu")
    assert "\n" not in str(info.value) and seen == [True]


def test_only_hugging_face_tokenizers_go_to_the_hub():
    assert models.hub_tokenizer("ViT-B-16-SigLIP") == "timm/ViT-B-16-SigLIP"
    assert models.hub_tokenizer("ViT-B-32") is None and models.hub_tokenizer("coca_ViT-B-32") is None
    assert models.hub_tokenizer("clipbridge-tiny-affine") is None


@pytest.mark.slow
def test_the_real_offline_siglip_tokenizer_error_is_one_line():
    pytest.importorskip("transformers")
    if models.hub_reachable():
        pytest.skip("the Hugging Face hub is reachable here: the tokenizer would download")
    with pytest.raises(ClipBridgeError, match="no network and its files are not in the local Hugging Face cache"):
        models.load_tokenizer("ViT-B-16-SigLIP")


def test_families_probe_prints_a_row_per_model_with_its_identity_error(capsys):
    from clipbridge.extract.families import main

    assert main(["clipbridge-tiny-affine", "clipbridge-tiny-coca"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | text pooling | projection | EOS features | identity error |")
    affine, coca = lines[2].split(" | "), lines[3].split(" | ")
    assert affine[:4] == ["| clipbridge-tiny-affine", "last", "affine", "stored"] and affine[5] == "-10"
    assert coca[:4] == ["| clipbridge-tiny-coca", "cls-appended", "matrix", "stored"]
    assert float(affine[4]) <= models.IDENTITY_TOLERANCE["fp32"] and affine[7] == "its tokenizer"
