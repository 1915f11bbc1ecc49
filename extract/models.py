"""Loading an open_clip model (name + pretrained tag or local checkpoint) and encoding text with its EOS feature.

Importing this module registers `extract/model_configs/` with open_clip, so project configs such as
"clipbridge-tiny" are ordinary open_clip model names.

Every open_clip family that encodes images and text loads; what its cache can hold besides the image and
projected text embeddings depends on how its text tower ends (`TextHead`, `text_head`): when it ends in
pooling followed by a linear or affine projection, `encode_text_with_eos(model, tokens)` runs the text
tower once and returns both the projected embedding [P, D] and the pooled pre-projection feature [P, W]
(the "EOS feature": for CLIP, token + positional embedding -> transformer -> ln_final -> row at the EOT
position; SigLIP's last token; CoCa's appended CLS token), with `eos @ Wt + b == model.encode_text(tokens)`
(b only for affine projections such as SigLIP's). `load_model` confirms that identity on probe prompts.
Models whose tokenizer comes from Hugging Face (SigLIP, SigLIP2, ...) need the optional dependency
`transformers` (`pip install 'clipbridge[siglip]'`) and the tokenizer files (downloaded once, then cached).
"""
from __future__ import annotations

import contextlib
import logging
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from urllib.parse import urlparse
from pathlib import Path
from typing import Callable

import open_clip
import torch
from torch import nn

from clipbridge.bridge.devices import resolve_device
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.weights import CHECKPOINT_SUFFIXES, file_sha256, is_checkpoint_path  # noqa: F401

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
#: Weights that ship with the package, as tags of their model: {model: {tag: file}}.
from clipbridge.extract.bundled import BUNDLED_WEIGHTS, WEIGHTS_DIR  # noqa: E402,F401  (the bundled weights' table)
RANDOM_INIT = "random"
RANDOM_INIT_SEED = 0
PRECISIONS = ("fp32", "fp16", "bf16")
LIST_MODELS_HINT = "run `python cli.py extract --list-models` to see model names and their pretrained tags"
TOKENIZER_EXTRA = "pip install 'clipbridge[siglip]'"

log = logging.getLogger(__name__)

if str(MODEL_CONFIG_DIR) not in {str(p) for p in open_clip.factory._MODEL_CONFIG_PATHS}:
    open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class LoadedModel:
    """An open_clip model ready for extraction.

    model: the CLIP module in eval mode on `device`; preprocess: PIL image -> tensor [3, H, W];
    tokenizer: list[str] -> int64 tokens [P, L]; pretrained_id: the tag, the checkpoint's file name, or
    "random"; pretrained_sha256: sha256 of the checkpoint file ("" for tags and random init);
    channels_last: inputs go channels-last (convolutional image tower on CUDA); text_head: how the text
    tower ends (what the cache can hold besides encode_text), confirmed on probe prompts.
    """

    model: nn.Module
    preprocess: Callable
    tokenizer: Callable
    name: str
    pretrained_id: str
    pretrained_sha256: str
    device: torch.device
    precision: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool = False
    text_head: "TextHead | None" = None

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the model's weights and inputs use."""
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]


def check_model_name(name: str) -> None:
    """Refuse a model name open_clip does not know (hf-hub:/local-dir: names are passed through)."""
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    if name not in open_clip.list_models():
        raise ClipBridgeError(f"unknown model '{name}'; {LIST_MODELS_HINT}")


def describe_models() -> list[str]:
    """One line per open_clip model name: 'NAME: tag1, tag2' (tags open_clip can download)."""
    lines = []
    for name in open_clip.list_models():
        tags = pretrained_tags(name)
        lines.append(f"{name}: {', '.join(tags) if tags else '(no tags; pass --pretrained FILE or random)'}")
    return lines


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub's host name resolves within `timeout` seconds (no network: False)."""
    import huggingface_hub.constants as hub

    host = urlparse(hub.ENDPOINT).hostname or "huggingface.co"
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, host, 443).result(timeout=timeout)
        return True
    except Exception:  # noqa: BLE001  (resolution error or timeout: either way, no hub)
        return False
    finally:
        pool.shutdown(wait=False)


@contextlib.contextmanager
def quiet_weight_download(fetches: bool):
    """Around open_clip's weight (or tokenizer) loading: when it `fetches` from the hub and the hub is
    unreachable, use the hub offline (only the local cache is searched, instead of a minute of retries), and
    silence the hub's retry warnings and open_clip's error log, so a failure reaches the user as one
    ClipBridgeError line.
    Yields whether the hub is offline for this load (made so here, or by HF_HUB_OFFLINE)."""
    import huggingface_hub.constants as hub

    offline_before = hub.HF_HUB_OFFLINE
    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "huggingface_hub.utils._http", "")]
    levels = [lg.level for lg in loggers]
    try:
        if fetches:
            for lg in loggers:
                lg.setLevel(logging.CRITICAL)
            if not offline_before and not hub_reachable():
                hub.HF_HUB_OFFLINE = True
        yield fetches and hub.HF_HUB_OFFLINE
    finally:
        hub.HF_HUB_OFFLINE = offline_before
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def pretrained_tags(name: str) -> list[str]:
    """The tags open_clip can download for a model, then the project's bundled ones."""
    tags = [] if name.startswith(("hf-hub:", "local-dir:")) else list(open_clip.list_pretrained_tags_by_model(name))
    return tags + [tag for tag in BUNDLED_WEIGHTS.get(name, {}) if tag not in tags]


def default_pretrained(name: str) -> str:
    """The weights a model gets when --pretrained is not given: 'openai' when it has them, else its bundled
    tag (clipbridge-tiny: 'shapes'), else its first tag; a model without any needs --pretrained."""
    tags = pretrained_tags(name)
    for candidate in ("openai", *BUNDLED_WEIGHTS.get(name, {}), *tags):
        if candidate in tags:
            return candidate
    raise ClipBridgeError(f"model {name} has no pretrained tag; pass --pretrained FILE (or random)")


def _check_pretrained(name: str, pretrained: str | None) -> tuple[str | None, str, str]:
    """Resolve --pretrained into (open_clip argument, recorded id, sha256)."""
    if pretrained in (None, "", RANDOM_INIT, "none"):
        return None, RANDOM_INIT, ""
    bundled = BUNDLED_WEIGHTS.get(name, {}).get(pretrained)
    if bundled is not None:                          # a tag of ours: the file ships with the package
        if not bundled.is_file():
            raise ClipBridgeError(f"the bundled weights {bundled} are missing; reinstall clipbridge")
        return str(bundled), pretrained, file_sha256(bundled)
    if is_checkpoint_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ClipBridgeError(f"checkpoint file not found: {path}")
        return str(path), path.name, file_sha256(path)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        known = ", ".join(tags) if tags else "none"
        raise ClipBridgeError(
            f"unknown pretrained tag '{pretrained}' for model {name} (known tags: {known}); "
            f"pass --pretrained /path/to/checkpoint.pt for a local file"
        )
    return pretrained, pretrained, ""


def hub_tokenizer(name: str) -> str | None:
    """The Hugging Face tokenizer an open_clip model name's config asks for (SigLIP: "timm/ViT-B-16-SigLIP"),
    or None when open_clip's built-in tokenizer serves it."""
    if name.startswith(("hf-hub:", "local-dir:")):
        return None                                       # the tokenizer comes with the weights
    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        return str(text_cfg["hf_tokenizer_name"])
    return "SigLIP sentencepiece vocabulary" if "siglip" in name.lower() else None


def load_tokenizer(name: str) -> Callable:
    """open_clip's tokenizer for model `name`; a Hugging Face one (SigLIP, SigLIP2) needs `transformers`
    and its files (from the hub once, then the local Hugging Face cache): missing either is one line."""
    source = hub_tokenizer(name)
    try:
        with quiet_weight_download(source is not None) as hub_offline:
            return open_clip.get_tokenizer(name)
    except ImportError as error:
        raise ClipBridgeError(f"model {name} tokenizes text with the Hugging Face tokenizer {source!r}, which "
                              f"needs the optional dependency transformers: {TOKENIZER_EXTRA}") from error
    except (OSError, ValueError, RuntimeError) as error:
        if source is None:
            raise
        reason = ("no network and its files are not in the local Hugging Face cache" if hub_offline
                  else str(error).strip().splitlines()[0])
        raise ClipBridgeError(f"cannot load the tokenizer {source!r} of model {name}: {reason}; run once with "
                              "network access (the files are then cached under HF_HOME), or point HF_HOME at a "
                              "Hugging Face cache that holds them") from error


def state_dict_mismatch(message: str, shown: int = 3) -> str:
    """The gist of torch's load_state_dict error (a checkpoint of another architecture): the first missing,
    unexpected and size-mismatched keys, with counts; "" when the message is not such an error."""
    parts = []
    for kind in ("Missing", "Unexpected"):
        found = re.search(rf"{kind} key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)", message, re.S)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
            parts.append(f"{kind.lower()} keys {', '.join(keys[:shown])}{more}")
    sizes = re.findall(r"size mismatch for ([^:]+):", message)
    if sizes:
        more = f" and {len(sizes) - shown} more" if len(sizes) > shown else ""
        parts.append(f"shape mismatch in {', '.join(sizes[:shown])}{more}")
    return ("the checkpoint is for another architecture: " + "; ".join(parts)) if parts else ""


def load_model(name: str, pretrained: str | None, *, device: str = "auto", precision: str = "fp32") -> LoadedModel:
    """Create an open_clip model with its eval preprocess and tokenizer.

    pretrained: an open_clip tag (downloaded by open_clip), a checkpoint path (.pt/.bin/.safetensors),
    or None / "random" for random initialisation (seeded with RANDOM_INIT_SEED: the same weights in every
    process, so resumed and multi-process runs agree).
    """
    if precision not in PRECISIONS:
        raise ClipBridgeError(f"unknown --precision '{precision}' (use {', '.join(PRECISIONS)})")
    check_model_name(name)
    torch_device = resolve_device(device)
    source, pretrained_id, sha256 = _check_pretrained(name, pretrained)
    tokenizer = load_tokenizer(name)                        # before the (long) model creation
    fetches, hub_offline = source is not None and not is_checkpoint_path(source), False
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)  # random init is the same model in every process and run
            with quiet_weight_download(fetches) as hub_offline:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=source, precision=precision, device=torch_device
                )
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if fetches:
            reason = "no network and not in the local Hugging Face cache" if hub_offline else first_line
            raise ClipBridgeError(
                f"could not fetch pretrained weights '{source}' for {name}: {reason}; "
                f"download the checkpoint elsewhere and pass --pretrained /path/to/checkpoint.pt"
            ) from error
        where = f" from {source}" if source else ""
        reason = state_dict_mismatch(str(error)) or first_line
        raise ClipBridgeError(f"could not load model {name}{where}: {reason}") from error
    model.eval()
    channels_last = torch_device.type == "cuda" and not hasattr(model.visual, "transformer")
    if channels_last:  # convolutional image towers (ResNets, ConvNeXts) run faster channels-last on GPUs
        model.visual.to(memory_format=torch.channels_last)
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else int(cfg["size"][0])
    head = checked_text_head(model, tokenizer(PROBE_PROMPTS).to(torch_device), precision)
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        name=name,
        pretrained_id=pretrained_id,
        pretrained_sha256=sha256,
        device=torch_device,
        precision=precision,
        image_size=size,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        channels_last=channels_last,
        text_head=head,
    )


# ------------------------------------------------------------------------------------------ text head
@dataclass(frozen=True)
class TextHead:
    """How a model's text tower ends: what a cache can hold besides `encode_text`.

    pooling     how the pooled feature is taken: open_clip's pool type ("argmax", "last", "first", "eos"),
                "cls-appended" (CoCa: a CLS token appended to the text, ln_final after pooling), or
                "hf:<Pooler>" (a Hugging Face text tower)
    projection  "matrix" (a [W, D] parameter), "linear" (nn.Linear without bias), "affine" (nn.Linear
                with a bias: SigLIP, SigLIP2), "identity" (no projection), or what else it is
    weight      Wt [W, D] when the pooled feature (the "EOS feature") and the projection are stored
    bias        b [D] of an affine projection (t = e Wt + b), else None
    dim         D, the size of encode_text's output (0 until probed)
    note        why no EOS features are stored ("" when they are)
    """

    pooling: str
    projection: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    dim: int = 0
    note: str = ""

    @property
    def has_eos(self) -> bool:
        return self.weight is not None

    def attrs(self) -> dict[str, str]:
        """The cache's /model attributes for this head (schema.TEXT_HEAD_DEFAULTS)."""
        return {"text_pooling": self.pooling, "projection_kind": self.projection, "eos_note": self.note}


#: Largest relative error max|eos @ Wt + b − encode_text| / max|encode_text| accepted per precision: the
#: identity is exact up to the rounding of the model's own product.
IDENTITY_TOLERANCE = {"fp32": 1e-4, "fp16": 4e-3, "bf16": 3e-2}
PROBE_PROMPTS = ["a photo of a dog.", "itap of a snowdrop.", "x"]


def _text_tower(model: nn.Module) -> tuple[nn.Module, str]:
    """(the module holding the text tower's end, its kind: "inline" (open_clip's CLIP), "transformer"
    (a TextTransformer: CustomTextCLIP, CoCa), "hf" (HFTextEncoder) or "other")."""
    tower = getattr(model, "text", None)
    if tower is None:
        return model, "inline"
    if isinstance(tower, open_clip.transformer.TextTransformer):
        return tower, "transformer"
    if type(tower).__name__ == "HFTextEncoder":
        return tower, "hf"
    return tower, "other"


def text_head(model: nn.Module) -> TextHead:
    """The TextHead of a model from its structure (no forward pass; `checked_text_head` probes it).

    Stored (has_eos): a text tower ending in pooling and then a linear or affine map: open_clip's CLIP and
    TextTransformer towers (any pool type; CoCa's appended CLS token, whose ln_final comes after pooling,
    included) with a [W, D] parameter, an nn.Linear (with or without bias) or no projection (identity);
    Hugging Face towers whose projection is an nn.Linear or nothing. Not stored: an MLP projection (the
    default of Hugging Face towers), any other tower.
    """
    tower, kind = _text_tower(model)
    if kind == "other":
        return TextHead("unknown", type(tower).__name__,
                        note=f"text tower {type(tower).__name__} is not an open_clip TextTransformer or HF encoder")
    if kind == "hf":
        pooling, projection, width = f"hf:{type(tower.pooler).__name__}", tower.proj, tower.output_dim
    else:
        cls_appended = getattr(tower, "cls_emb", None) is not None
        pool_type = model.text_pool_type if kind == "inline" else tower.pool_type
        pooling = "cls-appended" if cls_appended else pool_type
        projection, width = tower.text_projection, model.transformer.width if kind == "inline" else tower.width
    return _projection_head(pooling, projection, width)


def _projection_head(pooling: str, projection: object, width: int) -> TextHead:
    if projection is None or isinstance(projection, nn.Identity):
        return TextHead(pooling, "identity", weight=torch.eye(width))
    if isinstance(projection, nn.Linear):
        bias = None if projection.bias is None else projection.bias.detach()
        return TextHead(pooling, "linear" if bias is None else "affine", projection.weight.detach().t(), bias)
    if isinstance(projection, torch.Tensor) and projection.ndim == 2:
        return TextHead(pooling, "matrix", projection.detach())
    what = type(projection).__name__
    return TextHead(pooling, what, note=f"the text projection is {what}, not a linear or affine map")


@contextlib.contextmanager
def _pooled_feature(model: nn.Module, tokens: torch.Tensor, pooling: str):
    """Around one encode_text: yields a function returning the pooled feature [P, W] that entered the
    projection (the input of an nn.Linear / nn.Identity projection; else ln_final's output, pooled as the
    tower pools it, or taken as it is when ln_final comes after pooling (CoCa))."""
    tower, kind = _text_tower(model)
    projection = tower.proj if kind == "hf" else tower.text_projection
    captured: list[torch.Tensor] = []
    if isinstance(projection, nn.Module):
        handle = projection.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0]))
        pool = lambda x: x  # noqa: E731
    else:
        handle = tower.ln_final.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        eos_id = getattr(model, "text_eos_id", None) if kind == "inline" else getattr(tower, "eos_id", None)
        pool = (lambda x: x) if pooling == "cls-appended" else \
            (lambda x: open_clip.transformer.text_global_pool(x, tokens, pooling, eos_token_id=eos_id))
    try:
        yield lambda: pool(captured[-1])
    finally:
        handle.remove()


def identity_error(projected: torch.Tensor, eos: torch.Tensor, head: TextHead) -> float:
    """max|eos @ Wt + b − projected| / max|projected|, computed in float32."""
    weight = head.weight.to(device=eos.device, dtype=torch.float32)
    rebuilt = eos.float() @ weight
    if head.bias is not None:
        rebuilt = rebuilt + head.bias.to(device=eos.device, dtype=torch.float32)
    scale = float(projected.float().abs().max()) or 1.0
    return float((rebuilt - projected.float()).abs().max()) / scale


@torch.no_grad()
def encode_text_with_eos(model: nn.Module, tokens: torch.Tensor, head: TextHead | None = None,
                         precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor | None]:
    """One text pass -> (projected [P, D], eos [P, W] or None), both in the model's dtype.

    projected is exactly `model.encode_text(tokens, normalize=False)`; eos is the pooled feature that
    entered the projection (None when `head`, default text_head(model), stores none). The identity
    eos @ Wt + b == projected is checked (IDENTITY_TOLERANCE[precision]); a failure is a ClipBridgeError.
    """
    head = head or text_head(model)
    if not head.has_eos:
        return model.encode_text(tokens, normalize=False), None
    with _pooled_feature(model, tokens, head.pooling) as pooled:
        projected = model.encode_text(tokens, normalize=False)
        eos = pooled()
    error = identity_error(projected, eos, head)
    if error > IDENTITY_TOLERANCE[precision]:
        raise ClipBridgeError(f"the pooled text feature @ Wt + b differs from encode_text (relative error "
                              f"{error:.1e} > {IDENTITY_TOLERANCE[precision]:g}): the text tower is not what "
                              f"its structure says ({head.pooling}, {head.projection})")
    return projected, eos


@torch.no_grad()
def checked_text_head(model: nn.Module, tokens: torch.Tensor, precision: str = "fp32") -> TextHead:
    """text_head(model) confirmed on probe `tokens` [P, L]: with its dim D, and without EOS features (a
    note saying why) when the identity eos @ Wt + b == encode_text does not hold."""
    head = text_head(model)
    if not head.has_eos:
        return replace(head, dim=int(model.encode_text(tokens, normalize=False).shape[-1]))
    with _pooled_feature(model, tokens, head.pooling) as pooled:
        projected = model.encode_text(tokens, normalize=False)
        eos = pooled()
    head = replace(head, dim=int(projected.shape[-1]))
    error = identity_error(projected, eos, head) if eos.shape[-1] == head.weight.shape[0] else float("inf")
    if error > IDENTITY_TOLERANCE[precision]:
        log.warning("pooled text feature @ Wt + b != encode_text (relative error %.1e): no EOS features stored",
                    error)
        return replace(head, weight=None, bias=None,
                       note=f"pooled feature @ Wt + b differs from encode_text (relative error {error:.1e})")
    return head


def cache_model_part(loaded: "LoadedModel") -> dict:
    """The keyword arguments of CacheWriter.write_model for a loaded model (Wt, τ, b, logit bias, head)."""
    head = loaded.text_head
    as_numpy = lambda t: None if t is None else t.detach().float().cpu().numpy()  # noqa: E731
    return {"text_projection": as_numpy(head.weight), "logit_scale": logit_scale(loaded.model),
            "projection_bias": as_numpy(head.bias), "logit_bias": logit_bias(loaded.model),
            "text_head": head.attrs()}


def logit_bias(model: nn.Module) -> float | None:
    """The logit bias of a sigmoid-loss model (SigLIP's `logit_bias`), None when the model has none."""
    bias = getattr(model, "logit_bias", None)
    return None if bias is None else float(bias.detach().float().reshape(-1)[0].item())


def logit_scale(model: nn.Module) -> float:
    """exp(logit_scale) of the model (τ)."""
    return float(model.logit_scale.detach().float().exp().item())
