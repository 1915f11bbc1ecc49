"""Loading an open_clip model (name + pretrained tag or local checkpoint) and encoding text with its EOS feature.

Importing this module registers `extract/model_configs/` with open_clip, so project configs such as
"clipbridge-tiny" are ordinary open_clip model names.

`encode_text_with_eos(model, tokens)` runs the text tower once and returns both the projected embedding
[P, D] and the pre-projection EOS feature [P, W] (token + positional embedding -> transformer -> ln_final ->
row at the EOT position), so that `eos @ text_projection_matrix(model) == model.encode_text(tokens)`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlparse
from pathlib import Path
from typing import Callable

import open_clip
import torch
from torch import nn

from clipbridge.cache.errors import ClipBridgeError

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
RANDOM_INIT = "random"
RANDOM_INIT_SEED = 0
PRECISIONS = ("fp32", "fp16", "bf16")
LIST_MODELS_HINT = "run `python cli.py extract --list-models` to see model names and their pretrained tags"

if str(MODEL_CONFIG_DIR) not in {str(p) for p in open_clip.factory._MODEL_CONFIG_PATHS}:
    open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class LoadedModel:
    """An open_clip model ready for extraction.

    model: the CLIP module in eval mode on `device`; preprocess: PIL image -> tensor [3, H, W];
    tokenizer: list[str] -> int64 tokens [P, L]; pretrained_id: the tag, the checkpoint's file name, or
    "random"; pretrained_sha256: sha256 of the checkpoint file ("" for tags and random init);
    channels_last: inputs go channels-last (convolutional image tower on CUDA).
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

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the model's weights and inputs use."""
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClipBridgeError(f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ClipBridgeError(f"unknown --device '{device}' (use auto, cpu or cuda)") from error


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def is_checkpoint_path(pretrained: str) -> bool:
    """A --pretrained value names a file (rather than a tag) when it has a path separator or a checkpoint suffix."""
    return "/" in pretrained or "\\" in pretrained or Path(pretrained).suffix.lower() in CHECKPOINT_SUFFIXES


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
        tags = open_clip.list_pretrained_tags_by_model(name)
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
    """Around open_clip's weight loading: when it `fetches` a tag and the hub is unreachable, use the hub
    offline (only the local cache is searched, instead of a minute of retries), and silence the hub's retry
    warnings and open_clip's error log, so a failure reaches the user as one ClipBridgeError line.
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


def _check_pretrained(name: str, pretrained: str | None) -> tuple[str | None, str, str]:
    """Resolve --pretrained into (open_clip argument, recorded id, sha256)."""
    if pretrained in (None, "", RANDOM_INIT, "none"):
        return None, RANDOM_INIT, ""
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
        raise ClipBridgeError(f"could not load model {name}{where}: {first_line}") from error
    model.eval()
    channels_last = torch_device.type == "cuda" and not hasattr(model.visual, "transformer")
    if channels_last:  # convolutional image towers (ResNets, ConvNeXts) run faster channels-last on GPUs
        model.visual.to(memory_format=torch.channels_last)
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else int(cfg["size"][0])
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(name),
        name=name,
        pretrained_id=pretrained_id,
        pretrained_sha256=sha256,
        device=torch_device,
        precision=precision,
        image_size=size,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        channels_last=channels_last,
    )


def _text_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, object, str, int | None]:
    """(module whose forward encodes text, its ln_final, its projection, pool type, eos id).

    Supports open_clip's CLIP (text tower inline) and CustomTextCLIP with a TextTransformer tower; refuses
    HF text towers and towers without an ln_final.
    """
    tower = getattr(model, "text", None)
    if tower is None:
        return model, model.ln_final, model.text_projection, model.text_pool_type, getattr(model, "text_eos_id", None)
    if not isinstance(tower, open_clip.transformer.TextTransformer):
        raise ClipBridgeError(
            f"model text tower {type(tower).__name__} is not supported: the EOS feature needs an open_clip "
            "TextTransformer (token embedding -> transformer -> ln_final -> projection)"
        )
    if getattr(tower, "cls_emb", None) is not None:
        raise ClipBridgeError("model text tower appends a CLS token (CoCa-style); its EOS feature is not supported")
    return tower, tower.ln_final, tower.text_projection, tower.pool_type, getattr(tower, "eos_id", None)


def text_projection_matrix(model: nn.Module) -> torch.Tensor:
    """CLIP's text projection as a matrix Wt [W, D] with `eos @ Wt == encode_text` (no bias allowed).

    An nn.Linear projection without bias gives Wt = weight.T; with a bias (affine, not linear) or without
    any projection the model is refused, since the bridge needs a linear map from EOS space.
    """
    projection = _text_parts(model)[2]
    if projection is None:
        raise ClipBridgeError("model has no text projection; the EOS -> joint-space map Wt is undefined")
    if isinstance(projection, nn.Linear):
        if projection.bias is not None:
            raise ClipBridgeError("model's text projection is an nn.Linear with a bias; Wt must be linear (no bias)")
        return projection.weight.t()
    if isinstance(projection, torch.Tensor):
        return projection
    raise ClipBridgeError(f"model's text projection {type(projection).__name__} is not a matrix or nn.Linear")


@torch.no_grad()
def encode_text_with_eos(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One text pass -> (projected [P, D], eos [P, W]), both in the model's dtype.

    eos is ln_final's output pooled at the EOT position (open_clip's text_global_pool) before the
    projection; projected is exactly `model.encode_text(tokens)`.
    """
    _, ln_final, _, pool_type, eos_id = _text_parts(model)
    text_projection_matrix(model)  # refuse unsupported projections before running anything
    captured: list[torch.Tensor] = []
    handle = ln_final.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        projected = model.encode_text(tokens)
    finally:
        handle.remove()
    normed = captured[-1]
    eos = open_clip.transformer.text_global_pool(normed, tokens, pool_type, eos_token_id=eos_id)
    return projected, eos


def logit_scale(model: nn.Module) -> float:
    """exp(logit_scale) of the model (τ)."""
    return float(model.logit_scale.detach().float().exp().item())
