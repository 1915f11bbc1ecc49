"""Published numbers that rest on a choice made on test data by the method's official code (RECIPES.md §2.1-2.4)
carry a mark and its footnote wherever they are shown: the `published` command, the tables, the plots."""
from __future__ import annotations

from click.testing import CliRunner

from clipbridge.evaluate.commands.published import published
from clipbridge.evaluate.reporting.published import NOTES, find_published
from clipbridge.evaluate.reporting.tables import build_table, to_markdown, table_summary


def test_marks_follow_the_official_codes_test_selections():
    def marks(method, dataset, shots=16):
        return find_published("ViT-B-16", "openai", method, dataset, shots).marks

    assert marks("tip-adapter-f", "dtd") == "†"                     # best test epoch, every dataset
    assert marks("tip-adapter-f", "imagenet") == "†‡"
    for method in ("tip-adapter", "ape", "ape-t", "semobridge", "semobridge-t"):
        assert marks(method, "imagenet") == "‡" and marks(method, "average") == "‡" and marks(method, "dtd") == ""
    assert marks("clip-adapter", "imagenet") == "" and marks("coop", "imagenet") == ""      # last epoch, no search
    assert marks("zeroshot", "imagenet") == ""
    assert find_published("ViT-B-16", "openai", "gda", "average", 16).marks == "‡"


def test_published_command_prints_the_marks_and_their_footnotes():
    out = CliRunner().invoke(published, ["--model", "ViT-B-16", "--dataset", "imagenet", "--shots", "1"]).output
    lines = out.splitlines()
    assert any(line.split()[1] == "tip-adapter-f" and "†‡" in line for line in lines[1:])
    assert any(line.split()[1] == "clip-adapter" and "†" not in line and "‡" not in line for line in lines[1:])
    assert lines[-2:] == [f"† {NOTES['†']}", f"‡ {NOTES['‡']}"]
    clean = CliRunner().invoke(published, ["--model", "ViT-B-16", "--method", "clip-adapter", "--dataset", "dtd"]).output
    assert "†" not in clean and "‡" not in clean


def _records():
    out = []
    for dataset in ("dtd", "imagenet"):
        for method in ("tip-adapter", "tip-adapter-f", "clip-adapter"):
            out.append({"dataset": dataset, "method": method, "shots": 16, "seed": 1, "test_accuracy": 70.0,
                        "val_accuracy": 70.0, "model": "ViT-B-16", "pretrained": "openai", "recipe": "paper",
                        "protocol": "clean"})
    return out


def test_tables_put_the_mark_next_to_the_published_number_and_the_footnote_under_its_dataset():
    table = build_table(_records())
    text = to_markdown(table)
    dtd, imagenet = text.split("### dtd")[1].split("### imagenet")
    paper = {key: table.published[key].accuracy for key in table.published}
    assert f"(paper {paper[('dtd', 'tip-adapter-f', 16)]:.2f}†," in dtd
    assert f"(paper {paper[('dtd', 'tip-adapter', 16)]:.2f}," in dtd and "‡ " not in dtd
    assert f"† {NOTES['†']}" in dtd
    assert f"(paper {paper[('imagenet', 'tip-adapter', 16)]:.2f}‡," in imagenet
    assert f"(paper {paper[('imagenet', 'clip-adapter', 16)]:.2f}," in imagenet
    assert f"‡ {NOTES['‡']}" in imagenet and f"† {NOTES['†']}" in imagenet
    summary = table_summary(table)
    assert summary["imagenet"]["tip-adapter"]["16"]["paper_notes"] == [f"‡ {NOTES['‡']}"]
    assert "paper_notes" not in summary["dtd"]["clip-adapter"]["16"]
