"""Published accuracies (RECIPES.md §3) shipped as data (evaluate/reporting/published.csv), to put next to ours.

A published row matches a result of ours when model, weights, method, dataset and shot count are the same
(zero-shot rows have shots 0 and match every shot count; dataset "average" is the 11-dataset average and
matches only an average over exactly those 11 datasets). They come from the authors' protocol (the full
val split; ImageNet's val is its test set), so a difference can be the protocol as well as the method.

Some published numbers rest on a choice made on test data by the method's official code (RECIPES.md §2):
`Published.marks` flags them, and NOTES holds the footnote of each mark, which the `published` command, the
tables and the plots print next to the number (ours never look at test data, so a gap there is expected):
    †  Tip-Adapter-F, every dataset: the official loop keeps the epoch with the best test accuracy and reports
       the larger of that and the final accuracy (RECIPES.md §2.2)
    ‡  ImageNet (and the 11-dataset average, which includes it) for Tip-Adapter(-F), APE(-T), GDA and
       SeMoBridge(-T): their ImageNet searches and selections run on its val split, which is its test set
       (RECIPES.md §2.1-2.4)
(Whether the SeMoBridge file's baseline rows were run with the official code is not stated, RECIPES.md §4;
the marks say what that code does.)

The `published` command (evaluate/commands/published.py) prints them.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "published.csv"
AVERAGE = "average"
TEST_EPOCH, IMAGENET_TEST = "†", "‡"
#: the footnote of each mark (module docstring)
NOTES = {
    TEST_EPOCH: "selected on test data: Tip-Adapter-F's official code keeps the epoch with the best test accuracy "
                "and reports the larger of that and the final one (RECIPES.md §2.2)",
    IMAGENET_TEST: "ImageNet searched on test data: the official code searches (or selects) ImageNet's "
                   "hyper-parameters on its val split, which is its test set; an average includes that number "
                   "(RECIPES.md §2.1-2.4)",
}
#: methods whose official code searches or selects on ImageNet's test set
IMAGENET_TEST_METHODS = ("tip-adapter", "tip-adapter-f", "ape", "ape-t", "gda", "semobridge", "semobridge-t")


@dataclass(frozen=True)
class Published:
    """One published accuracy (percent) and where it comes from."""

    model: str
    pretrained: str
    method: str
    dataset: str
    shots: int
    accuracy: float
    source: str

    @property
    def marks(self) -> str:
        """The NOTES marks of this number ("" when no choice of its official code saw test data)."""
        marks = TEST_EPOCH if self.method == "tip-adapter-f" else ""
        if self.method in IMAGENET_TEST_METHODS and self.dataset in ("imagenet", AVERAGE):
            marks += IMAGENET_TEST
        return marks


def footnotes(rows) -> list[str]:
    """"MARK note" lines for the marks of `rows` (Published), in NOTES order."""
    used = "".join(row.marks for row in rows)
    return [f"{mark} {note}" for mark, note in NOTES.items() if mark in used]


@lru_cache(maxsize=1)
def published_rows() -> tuple[Published, ...]:
    """Every row of evaluate/reporting/published.csv."""
    with open(DATA, encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return tuple(Published(r["model"], r["pretrained"], r["method"], r["dataset"], int(r["shots"]),
                           float(r["accuracy"]), r["source"]) for r in csv.DictReader(lines))


def find_published(model: str, pretrained: str, method: str, dataset: str, shots: int) -> Published | None:
    """The published row matching one result of ours, or None."""
    wanted = 0 if method == "zeroshot" else int(shots)
    for row in published_rows():
        if (row.model, row.pretrained, row.method, row.dataset, row.shots) == (model, pretrained, method, dataset,
                                                                                wanted):
            return row
    return None
