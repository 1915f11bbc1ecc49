"""Generated image folders for tests that run a real model: class folders of PNGs whose colour and stripes
depend on the class, so that even the bundled tiny model tells the classes apart a little."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def striped_imagefolder(root: Path, classes: int, per_class: int, *, size: tuple[int, int] = (48, 48),
                        seed: int = 0) -> Path:
    """root/class_<label>/<i>.png for `classes` × `per_class` images of `size` (height, width); returns root."""
    rng = np.random.default_rng(seed)
    for label in range(classes):
        for i in range(per_class):
            pixels = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
            pixels[:, :, label % 3] += 150
            pixels[:: 2 + label, :, :] = 255
            path = root / f"class_{label}" / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root
