"""`analyze` on synthetic caches whose modality gap is known by construction: the measured gap, what the
closed-form bridge does to it, retrieval against brute force, saved runs, the outputs and refusals."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from clipbridge.cache.reader import open_cache
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.evaluate.analysis.analyze import AnalysisSpec, run_analysis
from clipbridge.evaluate.commands.analyze import analyze
from clipbridge.evaluate.analysis.plots import cosine_hist_figure, embedding_map_figure
from figures import figure_labels

SIZE = {"classes": 20, "train_per_class": 8, "dim": 64, "width": 48, "val": 60, "test": 1000}
# The synthetic cache's expected centroid gap is a first-order expansion (cache/synthetic.py); with 1,000
# test images the measured one stays within 0.004 of it for gaps 0-4 and D = 32-512; 0.01 leaves room.
GAP_TOLERANCE = 0.01
QUICK = {"semobridge-t": {"steps": 20, "warmup": 5}, "cmm": {"steps": 20}}


def _cache(folder, gap, seed=0):
    return open_cache(write_synthetic_cache(folder / f"gap{gap}-{seed}.h5", gap=gap, seed=seed, **SIZE))


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gap-caches")
    return {gap: _cache(folder, gap) for gap in (0.5, 2.0, 4.0)}


@pytest.fixture(scope="module")
def closed_form(caches):
    """semobridge fitted on the spot (4 shots, seed 1) on each cache."""
    return {gap: run_analysis(AnalysisSpec(methods=("semobridge",), shots=4, device="cpu"), cache)
            for gap, cache in caches.items()}


def _row(analysis, name):
    return next(r for r in analysis.document["representations"] if r["name"] == name)["metrics"]


def test_measured_centroid_gap_matches_the_gap_built_into_the_synthetic_cache(caches, closed_form):
    measured = []
    for gap, cache in caches.items():
        expected = json.loads(cache.attrs["synthetic"])["expected_centroid_gap"]
        measured.append(_row(closed_form[gap], "raw")["centroid_gap"])
        assert measured[-1] == pytest.approx(expected, abs=GAP_TOLERANCE), gap
    assert measured == sorted(measured) and measured[-1] - measured[0] > 0.2      # a wider g, a wider gap


def test_closed_form_bridge_moves_images_towards_the_text_centroid(closed_form):
    for gap, analysis in closed_form.items():
        raw, bridged = _row(analysis, "raw"), _row(analysis, "semobridge")
        assert bridged["centroid_gap"] < raw["centroid_gap"] - 0.02, gap
        assert bridged["own_text_cosine"] > raw["own_text_cosine"], gap


def test_retrieval_at_1_and_5_of_each_representation_equal_a_brute_force_search(closed_form):
    analysis = closed_form[2.0]
    labels, gallery_labels = analysis.labels, analysis.gallery_labels
    assert gallery_labels.tolist() == torch.arange(SIZE["classes"]).repeat_interleave(4).tolist()  # 4 shots
    for rep in analysis.representations:
        sims = rep.images @ rep.support.T
        order = sims.argsort(dim=-1, descending=True)
        for k in (1, 5):
            hits = (gallery_labels[order[:, :k]] == labels[:, None]).any(-1).double().mean()
            assert _row(analysis, rep.name)[f"retrieval@{k}"] == pytest.approx(float(hits), abs=1e-12)


def test_figures_have_labelled_axes_and_legends(closed_form, caches):
    analysis = closed_form[2.0]
    hist = figure_labels(cosine_hist_figure(analysis.measurements))
    assert [a["title"].split()[0] for a in hist["axes"]] == ["raw", "semobridge"]
    for axes in hist["axes"]:
        assert axes["xlabel"] == "cosine of two test images" and axes["ylabel"] == "density"
        assert [t.split(" (")[0] for t in axes["legend"]] == ["same class", "different class"]
    projection = figure_labels(embedding_map_figure(analysis.representations, analysis.text, analysis.labels,
                                                    analysis.classnames))
    assert all(a["xlabel"].startswith("PC 1 (") and a["ylabel"].startswith("PC 2 (") for a in projection["axes"])
    legend = projection["figure_legends"][0]
    assert "class text T̄" in legend and "class 000" in legend and "class 019" in legend


def test_analyze_command_writes_the_four_outputs_from_fitted_and_saved_bridges(tmp_path, caches):
    cache = str(caches[2.0].path)
    common = ["--cache", cache, "--shots", "2", "--device", "cpu", "--out", str(tmp_path / "analysis"),
              "--max-pairs", "100"]
    first = CliRunner().invoke(analyze, [*common, "--name", "fitted", "--save-runs", str(tmp_path / "runs"),
                                         "--hparam", "semobridge-t.steps=20", "--hparam", "cmm.steps=20"])
    assert first.exit_code == 0, first.output
    folder = tmp_path / "analysis" / "fitted"
    document = json.loads((folder / "gap.json").read_text())               # strict JSON
    assert [r["name"] for r in document["representations"]] == ["raw", "cmm", "semobridge", "semobridge-t"]
    assert document["pairs"]["intra"]["used"] == SIZE["classes"] * 100 < document["pairs"]["intra"]["total"]
    cmm = document["representations"][1]["metrics"]["own_text"]
    assert cmm["name"] == "learned prototypes n(T)" and 0 < cmm["centroid_gap"]
    for png in ("cosine_hist.png", "embedding_map.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "gap.md").read_text()
    assert "| semobridge-t |" in markdown and "against its learned prototypes" in markdown
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]

    runs = sorted(str(p) for p in (tmp_path / "runs").glob("*/*/*"))
    assert len(runs) == 3
    again = CliRunner().invoke(analyze, [*common[2:], "--name", "saved", *[x for r in runs for x in ("--run", r)]])
    assert again.exit_code == 0, again.output
    assert "fit " not in again.output                                       # nothing refitted
    saved = json.loads((tmp_path / "analysis" / "saved" / "gap.json").read_text())
    for fitted_row, saved_row in zip(document["representations"], saved["representations"]):
        assert saved_row["metrics"] == fitted_row["metrics"]
        assert saved_row["method_top1"] == fitted_row["method_top1"]


@pytest.mark.parametrize("args, message", [
    (["--methods", "zeroshot"], "do not map images"),
    (["--max-pairs", "0"], "--max-pairs must be at least 1"),
    (["--run", "nowhere"], "is not a saved run"),
    (["--shots", "99"], "--shots 99 is out of range"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, caches, capsys, args, message):
    from clipbridge.cli import main

    out = tmp_path / "analysis"
    code = main(["analyze", "--cache", str(caches[0.5].path), "--device", "cpu", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_a_run_of_another_cache_or_without_the_seed_is_refused(tmp_path, caches):
    from clipbridge.errors import ClipBridgeError

    run_analysis(AnalysisSpec(methods=("semobridge",), shots=2, device="cpu", save_runs=tmp_path), caches[0.5])
    run = next(tmp_path.glob("*/*/*"))
    with pytest.raises(ClipBridgeError, match="was fitted on cache"):
        run_analysis(AnalysisSpec(runs=(run,), device="cpu"), caches[2.0])
    with pytest.raises(ClipBridgeError, match="not seed 2"):
        run_analysis(AnalysisSpec(runs=(run,), seed=2, device="cpu"), caches[0.5])
    with pytest.raises(ClipBridgeError, match="disagrees with the runs"):
        run_analysis(AnalysisSpec(runs=(run,), shots=4, device="cpu"), caches[0.5])


@pytest.mark.slow
def test_speed_script_prints_the_one_off_fits_and_the_analysis_phases(capsys):
    from clipbridge.evaluate.analysis.speed import main

    main(["--classes", "4", "--dim", "8", "--width", "8", "--shots", "2", "--test", "40", "--val", "8",
          "--steps", "5", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "one-off fit  semobridge-t:" in out and "(5 training steps)" in out
    for phase in ("load", "measure", "plots", "write", "total"):
        assert f"{phase}:" in out
    assert "process, start to exit" in out and "| semobridge-t |" in out
