"""The tiny CLIP of the embedded default: open_clip's `clipbridge-tiny`, pre-trained on generated scenes.

Pre-training pairs come from the same renderer as the `shapes` dataset (extract/shapes.py) but from a wider
distribution: any of 8 shapes x 12 colours x 4 patterns, at most one distractor, captions in varied
sentences that describe some of the main object's attributes (shape, colour, pattern, position, size) and
sometimes the distractor or the background. The downstream classes of `shapes` are fixed combinations
shown with heavier clutter, so zero-shot transfer works, but only partly.

    python -m clipbridge.extract.toy_clip train [--steps 2500 --batch-size 32 --seed 0 --out FILE]
    python -m clipbridge.extract.toy_clip eval  [--pretrained FILE] [--per-class 64]

The checkpoint is an fp16 state dict in safetensors format, loaded like any local weights:
    open_clip.create_model_and_transforms("clipbridge-tiny", pretrained=FILE)   # after register_config()
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np
import torch

from clipbridge.errors import ClipBridgeError
from clipbridge.extract import shapes

MODEL_NAME = "clipbridge-tiny"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / f"{MODEL_NAME}-shapes.safetensors"
DEFAULT_TEMPLATE = "a photo of a {}."


def register_config() -> None:
    """Make `clipbridge-tiny` known to open_clip: importing extract.models registers extract/model_configs/."""
    import clipbridge.extract.models  # noqa: F401


# ------------------------------------------------------------------------------------------------ captions

SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
PATTERN_WORDS = {
    "solid": (("plain", "solid"), ()),
    "striped": (("striped",), ("with stripes", "with diagonal stripes")),
    "dotted": (("dotted", "polka-dot", "spotted"), ("with dots", "with white spots")),
    "checkered": (("checkered", "chequered"), ("with a checkerboard pattern", "with checks")),
}
SENTENCES = (
    "a photo of a {np}.", "a {np}.", "{np}", "a picture of a {np}.", "an image of a {np} {pos}.",
    "there is a {np} {pos}.", "a {np} {pos}.", "a drawing of a {np}.", "a {np} on a {bg} background.",
    "a photo of a {np} {pos}.", "a {np} next to a {np2}.", "a {np2} and a {np}.", "the {np} {pos}.",
    "a rendering of a {np}.", "this is a {np}.", "a close-up photo of a {np}.",
)


def _article(phrase: str) -> str:
    """'a' or 'an' for the phrase that follows."""
    return "an" if phrase[:1] in "aeiou" else "a"


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def position_phrase(rng: np.random.Generator, cx: float, cy: float) -> str:
    """Where the object is, in words: 'on the left', 'at the top right', 'in the center'..."""
    vertical = "top" if cy < -0.25 else "bottom" if cy > 0.25 else ""
    horizontal = "left" if cx < -0.25 else "right" if cx > 0.25 else ""
    if not vertical and not horizontal:
        return _pick(rng, ("in the center", "in the middle", "in the centre of the image"))
    if vertical and horizontal:
        return _pick(rng, (f"in the {vertical} {horizontal} corner", f"at the {vertical} {horizontal}"))
    side = vertical or horizontal
    return _pick(rng, (f"on the {side}", f"at the {side}", f"on the {side} side"))


def noun_phrase(rng: np.random.Generator, thing: shapes.Thing, colour: str, *, keep: float) -> str:
    """A description of one object; each attribute but the shape is kept with probability `keep`."""
    shape, pattern = shapes.SHAPES[thing.shape], shapes.PATTERNS[thing.pattern]
    words = []
    size_word = "small" if thing.size < 0.3 else "large" if thing.size > 0.52 else ""
    if size_word and rng.uniform() < keep * 0.6:
        words.append(_pick(rng, SIZE_WORDS[size_word]))
    adjectives, suffixes = PATTERN_WORDS[pattern]
    # a patterned object is named by its pattern most of the time; a plain one rarely says 'plain'
    say_pattern = rng.uniform() < (0.15 if pattern == "solid" else 0.85 * keep + 0.1)
    use_suffix = say_pattern and suffixes and rng.uniform() < 0.3
    pattern_first = rng.uniform() < 0.5  # 'striped blue square' or 'blue striped square'
    if say_pattern and not use_suffix and pattern_first:
        words.append(_pick(rng, adjectives))
    if rng.uniform() < keep:
        words.append(colour)
    if say_pattern and not use_suffix and not pattern_first:
        words.append(_pick(rng, adjectives))
    words.append(shape)
    if use_suffix:
        words.append(_pick(rng, suffixes))
    return " ".join(words)


def describe(rng: np.random.Generator, scene: shapes.Scene, main: int, colours: list[str]) -> str:
    """A caption of the scene: mostly its main object (scene.things[main]); colours[i] names things[i]."""
    thing = scene.things[main]
    np_main = noun_phrase(rng, thing, colours[main], keep=float(rng.uniform(0.7, 1.0)))
    others = [i for i in range(len(scene.things)) if i != main and scene.things[i].shape != shapes.BAR]
    candidates = [s for s in SENTENCES if "{np2}" not in s or others]
    sentence = _pick(rng, candidates)
    np2 = noun_phrase(rng, scene.things[others[0]], colours[others[0]], keep=0.7) if others else ""
    brightness = float(np.mean(scene.background_a + scene.background_b))
    bg = "dark" if brightness < 0.4 else "light" if brightness > 0.6 else _pick(rng, ("grey", "colourful", "noisy"))
    text = sentence.format(np=np_main, np2=np2, pos=position_phrase(rng, thing.cx, thing.cy), bg=bg)
    # fix articles: 'a' before a vowel-initial phrase
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = _article(words[i + 1])
    return " ".join(words)


def plain_caption(thing: shapes.Thing, colour: str) -> str:
    """The shortest full description of an object: 'a striped blue square.'"""
    name = shapes.ShapesClass(shapes.SHAPES[thing.shape], colour, shapes.PATTERNS[thing.pattern]).name
    return f"{_article(name)} {name}."


def plain_share(step: int, steps: int, floor: float = 0.25) -> float:
    """Share of plain captions at a step: 1 at the start, down to `floor` at half of training (curriculum)."""
    return max(floor, 1.0 - step / max(steps / 2, 1))


def sample_pretraining_pair(rng: np.random.Generator, plain: float = 0.0) -> tuple[shapes.Scene, str]:
    """One (scene, caption) pair from the pre-training distribution; a plain caption with probability `plain`."""
    colour = shapes.COLOUR_NAMES[int(rng.integers(len(shapes.COLOUR_NAMES)))]
    main = shapes.sample_thing(rng, shape=int(rng.integers(len(shapes.SHAPES))), colour=colour,
                               pattern=int(rng.choice(len(shapes.PATTERNS), p=[0.55, 0.15, 0.15, 0.15])),
                               size=(0.22, 0.62))
    things, colours = [main], [colour]
    if rng.uniform() < 0.4:
        distractor_colour = shapes.COLOUR_NAMES[int(rng.integers(len(shapes.COLOUR_NAMES)))]
        things.insert(0, shapes.sample_thing(rng, shape=int(rng.integers(len(shapes.SHAPES))),
                                             colour=distractor_colour, pattern=0, size=(0.12, 0.24)))
        colours.insert(0, distractor_colour)
    if rng.uniform() < 0.1:
        things.append(shapes.sample_occluder(rng))
        colours.append("")
    scene = shapes.Scene(**shapes.sample_background(rng), things=tuple(things),
                         noise=float(rng.uniform(0.0, 0.05)), noise_seed=int(rng.integers(2**31)))
    if rng.uniform() < plain:
        return scene, plain_caption(main, colour)
    return scene, describe(rng, scene, things.index(main), colours)


def pretraining_batch(seed: int, step: int, batch_size: int, plain: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """Images [B, 3, H, W] in [0, 1] and captions of one training step; depends only on the arguments."""
    rng = np.random.default_rng([seed, step])
    pairs = [sample_pretraining_pair(rng, plain) for _ in range(batch_size)]
    return shapes.render_scenes([s for s, _ in pairs]), [c for _, c in pairs]


# ------------------------------------------------------------------------------------------------ training

def normalizer(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's preprocessing mean and std as [1, 3, 1, 1] tensors."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    return torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def learning_rate(step: int, *, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on gains, biases, embeddings and the logit scale."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln" in name
        (plain if no_decay else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": plain, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)


def train_tiny_clip(*, steps: int, batch_size: int, seed: int, lr: float = 1e-3, warmup: int = 20,
                    weight_decay: float = 0.1, plain_floor: float = 0.25, log_every: int = 50,
                    log=print) -> tuple[torch.nn.Module, dict]:
    """Contrastive pre-training of a random-init clipbridge-tiny (open_clip.ClipLoss).

    Captions start plain ('a red circle.') and turn to varied sentences over the first half of training,
    down to a `plain_floor` share of plain ones (plain_share).

    Returns the fp32 model (eval mode) and a record {losses (mean of every log_every steps), train_seconds
    (wall clock), train_cpu_seconds (CPU time of this process, all threads), ...}.
    """
    import open_clip

    register_config()
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    mean, std = normalizer(model)
    loss_fn = open_clip.ClipLoss()
    optimizer = make_optimizer(model, lr, weight_decay)
    model.train()
    losses, start, cpu_start, window = [], time.perf_counter(), time.process_time(), []
    with ThreadPoolExecutor(max_workers=1) as pool:  # the next batch is drawn while this one trains
        def draw(step: int):
            return pool.submit(pretraining_batch, seed, step, batch_size, plain_share(step, steps, plain_floor))

        pending = draw(0)
        for step in range(steps):
            images, captions = pending.result()
            if step + 1 < steps:
                pending = draw(step + 1)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps=steps, peak=lr, warmup=warmup)
            image_features, text_features, scale = model((torch.from_numpy(images) - mean) / std,
                                                         tokenizer(captions))
            loss = loss_fn(image_features, text_features, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            window.append(loss.item())
            if (step + 1) % log_every == 0 or step + 1 == steps:
                losses.append(round(sum(window) / len(window), 4))
                window = []
                log(f"step {step + 1}/{steps}  loss {losses[-1]:.4f}  "
                    f"scale {model.logit_scale.exp().item():.1f}  {time.perf_counter() - start:.0f}s")
    model.eval()
    record = dict(steps=steps, batch_size=batch_size, seed=seed, lr=lr, warmup=warmup,
                  weight_decay=weight_decay, plain_floor=plain_floor, loss_every=log_every, losses=losses,
                  train_seconds=round(time.perf_counter() - start, 1),
                  train_cpu_seconds=round(time.process_time() - cpu_start, 1))
    return model, record


# -------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, *, split: str = "test", per_class: int | None = None,
                       template: str = DEFAULT_TEMPLATE, seed: int = shapes.DEFAULT_SEED) -> float:
    """Top-1 zero-shot accuracy of `model` on a split of `shapes` with one prompt template per class.

    Pixels are those of the PIL images extraction reads (8-bit levels, 64x64 so no resize), normalised
    with the model's mean/std as its preprocess does.
    """
    mean, std = normalizer(model)
    items = [(item, label) for item, label in shapes.shapes_splits()[split]
             if per_class is None or int(item.rsplit("/", 1)[1]) < per_class]
    images = np.stack([shapes.render_item(item, seed) for item, _ in items])
    labels = torch.tensor([label for _, label in items])
    text = model.encode_text(tokenizer([template.format(name) for name in shapes.CLASSNAMES]), normalize=True)
    predictions = []
    for chunk in torch.from_numpy(images).split(256):
        features = model.encode_image((chunk - mean) / std, normalize=True)
        predictions.append((features @ text.T).argmax(1))
    return float((torch.cat(predictions) == labels).float().mean())


def load_tiny_clip(pretrained: str | Path = DEFAULT_CHECKPOINT):
    """(model, preprocess, tokenizer) through open_clip's own local-weights path."""
    import open_clip

    register_config()
    if not Path(pretrained).is_file():
        raise ClipBridgeError(f"toy_clip: checkpoint {pretrained} does not exist")
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=str(pretrained))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(MODEL_NAME)


# ---------------------------------------------------------------------------------------------- saving

def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> int:
    """Write the state dict as fp16 safetensors atomically; returns the file size in bytes."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # package data: readable by everyone
    os.replace(tmp, path)
    return path.stat().st_size


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


@click.group()
def main() -> None:
    """Train or evaluate the tiny CLIP of the embedded `shapes` default."""


@main.command()
@click.option("--steps", default=2500, show_default=True, help="optimizer steps")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="peak learning rate")
@click.option("--warmup", default=20, show_default=True)
@click.option("--threads", default=1, show_default=True,
              help="torch threads (the scene generator runs in one more thread)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CHECKPOINT,
              show_default=True, help="checkpoint (.safetensors); its record goes beside it as .json")
def train(steps: int, batch_size: int, seed: int, lr: float, warmup: int, threads: int, out: Path) -> None:
    """Pre-train clipbridge-tiny on generated captioned scenes; write fp16 weights + a JSON record."""
    import open_clip

    if out.suffix != ".safetensors":
        raise ClipBridgeError(f"toy_clip train: --out {out} must end in .safetensors")
    torch.set_num_threads(threads)
    model, record = train_tiny_clip(steps=steps, batch_size=batch_size, seed=seed, lr=lr, warmup=warmup)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    size = save_checkpoint(model, out, {"model": MODEL_NAME, "seed": str(seed), "steps": str(steps)})
    reloaded, _, _ = load_tiny_clip(out)  # the numbers recorded are those of the fp16 file as users load it
    accuracy = {split: round(zero_shot_accuracy(reloaded, tokenizer, split=split), 4) for split in ("val", "test")}
    record.update(
        model=MODEL_NAME, file=out.name, bytes=size, dtype="float16", format="safetensors (open_clip state dict)",
        command="python -m clipbridge.extract.toy_clip train " + " ".join(sys.argv[2:]),
        zero_shot_template=DEFAULT_TEMPLATE, zero_shot_accuracy=accuracy, chance=round(1 / len(shapes.CLASSES), 4),
        logit_scale=round(reloaded.logit_scale.exp().item(), 3), torch_threads=threads,
        torch_version=torch.__version__, open_clip_version=open_clip.__version__, machine=platform.machine(),
        processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
    write_json(out.with_suffix(".json"), record)
    click.echo(f"wrote {out} ({size / 1e6:.2f} MB) in {record['train_seconds']}s; zero-shot {accuracy}")


@main.command(name="eval")
@click.option("--pretrained", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CHECKPOINT,
              show_default=True)
@click.option("--split", type=click.Choice(list(shapes.SPLIT_SIZES)), default="test", show_default=True)
@click.option("--per-class", type=int, default=None, help="first N images of each class (default: all)")
@click.option("--template", default=DEFAULT_TEMPLATE, show_default=True)
def evaluate(pretrained: Path, split: str, per_class: int | None, template: str) -> None:
    """Print the zero-shot accuracy of a checkpoint on the shapes dataset."""
    torch.set_num_threads(2)
    model, _, tokenizer = load_tiny_clip(pretrained)
    accuracy = zero_shot_accuracy(model, tokenizer, split=split, per_class=per_class, template=template)
    click.echo(f"zero-shot accuracy on shapes/{split}: {accuracy:.4f} (chance {1 / len(shapes.CLASSES):.4f})")


if __name__ == "__main__":
    try:
        main(standalone_mode=False)
    except ClipBridgeError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
