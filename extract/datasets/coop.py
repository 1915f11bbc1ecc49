"""The 11 CoOp datasets in CoOp's folder layout, and the ImageNet test-only variants.

Layout under --root (as the dataset guide of KaiyangZhou/CoOp lays it out):

    name            folder           images under               split file
    caltech101      caltech-101      101_ObjectCategories       split_zhou_Caltech101.json
    oxford_pets     oxford_pets      images                     split_zhou_OxfordPets.json
    stanford_cars   stanford_cars    (the folder itself)        split_zhou_StanfordCars.json
    oxford_flowers  oxford_flowers   jpg                        split_zhou_OxfordFlowers.json
    food101         food-101         images                     split_zhou_Food101.json
    fgvc_aircraft   fgvc_aircraft    images                     images_variant_{train,val,test}.txt + variants.txt
    sun397          sun397           SUN397                     split_zhou_SUN397.json
    dtd             dtd              images                     split_zhou_DescribableTextures.json
    eurosat         eurosat          2750                       split_zhou_EuroSAT.json
    ucf101          ucf101           UCF-101-midframes          split_zhou_UCF101.json
    imagenet        imagenet         images/{train,val}/<wnid>  classnames.txt ("wnid name"); val is the test split

Test-only sets (split "test"; class names from the folder's classnames.txt, copied from imagenet/):
imagenetv2 (imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/), imagenet_sketch
(imagenet-sketch/images/<wnid>/), imagenet_a (imagenet-adversarial/imagenet-a/<wnid>/, 200 classes),
imagenet_r (imagenet-rendition/imagenet-r/<wnid>/, 200 classes). For the 200-class sets the cache records
`imagenet_class_index` (the ImageNet label of each class) and `wnids`, so evaluation can align them.

When the CoOp folder is absent and --download is given, the torchvision copy is fetched instead
(extract/datasets/download.py) with a deterministic split unless --split-file is passed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets.registry import DatasetSpec, clean_classname, register_dataset, require_path
from clipbridge.extract.datasets.splitfiles import check_images_exist, read_classnames_txt, spec_from_split_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class CoopLayout:
    """Where CoOp keeps one dataset: root/<folder>/<image_dir>/ and root/<folder>/<split_file>."""

    folder: str
    image_dir: str
    split_file: str


COOP_LAYOUTS = {
    "caltech101": CoopLayout("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": CoopLayout("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": CoopLayout("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": CoopLayout("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": CoopLayout("food-101", "images", "split_zhou_Food101.json"),
    "sun397": CoopLayout("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": CoopLayout("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": CoopLayout("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": CoopLayout("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}


def _maybe_download(name: str, root: Path, split_file: Path | None, download: bool) -> DatasetSpec | None:
    """The torchvision copy of the dataset when --download is given, else None."""
    if not download:
        return None
    from clipbridge.extract.datasets.download import torchvision_spec

    return torchvision_spec(name, root, split_file=split_file)


def missing_data_message(name: str, root: Path) -> str:
    """Where dataset `name`'s files must be (CoOp's layout under root) and how to get them."""
    from clipbridge.extract.datasets.download import SOURCES

    layout = COOP_LAYOUTS[name]
    folder = root / layout.folder
    images = f"{folder / layout.image_dir}/..." if layout.image_dir else f"{folder}/..."
    how = (f"pass --download to fetch it through torchvision (into {root / 'torchvision'})" if name in SOURCES
           else "torchvision cannot download it: get the images and split file as the dataset guide of KaiyangZhou/CoOp describes")
    return (f"dataset {name} not found: its images must be in {images} and its split file at "
            f"{folder / layout.split_file} (CoOp's layout under --root {root}); {how}")


def read_coop_dataset(name: str, root: Path, *, split_file: Path | None = None, download: bool = False) -> DatasetSpec:
    """One of the CoOp datasets with a split_zhou_*.json (or --split-file) in CoOp's layout under root."""
    layout = COOP_LAYOUTS[name]
    folder = root / layout.folder
    if not folder.is_dir():
        spec = _maybe_download(name, root, split_file, download)
        if spec is not None:
            return spec
        raise ClipBridgeError(missing_data_message(name, root))
    image_root = folder / layout.image_dir if layout.image_dir else folder
    spec = spec_from_split_file(name, split_file or folder / layout.split_file, image_root)
    spec.split_source = f"coop:{(split_file or folder / layout.split_file).name}"
    return spec


for _name in COOP_LAYOUTS:
    register_dataset(_name)(partial(read_coop_dataset, _name))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@register_dataset("fgvc_aircraft")
def read_fgvc_aircraft(root: Path, *, split_file: Path | None = None, download: bool = False) -> DatasetSpec:
    """FGVC-Aircraft as CoOp reads it: images_variant_<split>.txt lines "<image id> <variant>", variants.txt."""
    folder = root / "fgvc_aircraft"
    if not folder.is_dir():
        spec = _maybe_download("fgvc_aircraft", root, split_file, download)
        if spec is not None:
            return spec
        raise ClipBridgeError(f"dataset folder not found: {folder} (CoOp layout; or pass --download)")
    image_root = require_path(folder / "images", "image folder of fgvc_aircraft")
    if split_file is not None:
        spec = spec_from_split_file("fgvc_aircraft", split_file, image_root)
        spec.split_source = f"splitfile:{split_file.name}"
        return spec
    variants = [line.strip() for line in require_path(folder / "variants.txt", "class list").read_text().splitlines()
                if line.strip()]
    label_of = {variant: label for label, variant in enumerate(variants)}
    splits = {}
    for split in ("train", "val", "test"):
        listing = require_path(folder / f"images_variant_{split}.txt", "split list")
        rows = []
        for line in listing.read_text().splitlines():
            image_id, _, variant = line.strip().partition(" ")
            if not image_id:
                continue
            if variant not in label_of:
                raise ClipBridgeError(f"{listing}: variant '{variant}' is not in {folder / 'variants.txt'}")
            rows.append((str(image_root / f"{image_id}.jpg"), label_of[variant]))
        splits[split] = rows
    check_images_exist(splits, image_root, folder / "images_variant_train.txt")
    return DatasetSpec("fgvc_aircraft", [clean_classname(v) for v in variants], variants, splits,
                       split_source="coop:images_variant_*.txt", root=image_root)


def _wnid_folders(name: str, image_root: Path, classnames_file: Path) -> DatasetSpec:
    """Split "test": images in <image_root>/<wnid>/ labelled by the wnid's position among the folders present.

    All 1000 classes present -> ImageNet labels; a subset (ImageNet-A/-R) -> labels 0..K-1 with
    attrs imagenet_class_index / wnids mapping them back to ImageNet.
    """
    wnids, names = read_classnames_txt(classnames_file)
    index_of = {wnid: i for i, wnid in enumerate(wnids)}
    present = sorted(p.name for p in require_path(image_root, f"image folder of {name}").iterdir() if p.is_dir())
    unknown = [w for w in present if w not in index_of]
    if unknown:
        raise ClipBridgeError(f"class count mismatch: folder {image_root / unknown[0]} is not a class in "
                              f"{classnames_file}")
    present.sort(key=index_of.__getitem__)
    label_of = {wnid: label for label, wnid in enumerate(present)}
    rows = [(str(path), label_of[wnid]) for wnid in present for path in list_images(image_root / wnid)]
    originals = [names[index_of[w]] for w in present]
    attrs = {"wnids": present, "imagenet_class_index": [index_of[w] for w in present]}
    return DatasetSpec(name, [clean_classname(n) for n in originals], originals, {"test": rows},
                       split_source="folders", root=image_root, attrs=attrs)


@register_dataset("imagenet")
def read_imagenet(root: Path, *, split_file: Path | None = None, download: bool = False) -> DatasetSpec:
    """ImageNet: images/train/<wnid>/ (train) and images/val/<wnid>/ (test), classnames.txt "wnid name"."""
    folder = require_path(root / "imagenet", "dataset folder")
    classnames = folder / "classnames.txt"
    train = _wnid_folders("imagenet", folder / "images" / "train", classnames)
    test = _wnid_folders("imagenet", folder / "images" / "val", classnames)
    if len(train.classnames) != len(test.classnames):
        raise ClipBridgeError(f"class count mismatch: {folder / 'images/train'} has {len(train.classnames)} "
                              f"classes, {folder / 'images/val'} has {len(test.classnames)}")
    return DatasetSpec("imagenet", train.classnames, train.original_classnames,
                       {"train": train.splits["test"], "test": test.splits["test"]},
                       split_source="folders:images/train,images/val", root=folder / "images", attrs=train.attrs)


def _ood(name: str, folder: str, image_dir: str):
    def read(root: Path, *, split_file: Path | None = None, download: bool = False) -> DatasetSpec:
        base = require_path(root / folder, "dataset folder")
        return _wnid_folders(name, base / image_dir, base / "classnames.txt")

    read.__doc__ = f"{name}: test-only, images in {folder}/{image_dir}/<wnid>/, classnames.txt in {folder}/."
    return read


register_dataset("imagenet_sketch")(_ood("imagenet_sketch", "imagenet-sketch", "images"))
register_dataset("imagenet_a")(_ood("imagenet_a", "imagenet-adversarial", "imagenet-a"))
register_dataset("imagenet_r")(_ood("imagenet_r", "imagenet-rendition", "imagenet-r"))


@register_dataset("imagenetv2")
def read_imagenetv2(root: Path, *, split_file: Path | None = None, download: bool = False) -> DatasetSpec:
    """ImageNetV2 matched-frequency: folders named by ImageNet label 0..999, classnames.txt in imagenetv2/."""
    base = require_path(root / "imagenetv2", "dataset folder")
    image_root = require_path(base / "imagenetv2-matched-frequency-format-val", "image folder of imagenetv2")
    wnids, names = read_classnames_txt(base / "classnames.txt")
    rows = []
    for label in range(len(names)):
        class_dir = image_root / str(label)
        if not class_dir.is_dir():
            raise ClipBridgeError(f"class count mismatch: {class_dir} missing ({len(names)} classes in "
                                  f"{base / 'classnames.txt'})")
        rows.extend((str(path), label) for path in list_images(class_dir))
    return DatasetSpec("imagenetv2", [clean_classname(n) for n in names], names, {"test": rows},
                       split_source="folders", root=image_root, attrs={"wnids": wnids})
