"""`paper_grid --results DIR`: the kept cache and records let a stopped run resume instead of starting over."""
import h5py

from clipbridge.evaluate.bench import paper_grid
from clipbridge.evaluate.reporting.records import read_records, results_path


def _uuid(path) -> str:
    with h5py.File(path, "r") as file:
        return str(file.attrs["uuid"])


def test_a_kept_run_resumes_with_the_same_cache_and_fits_only_the_missing_cells(tmp_path, capsys):
    kept = tmp_path / "grid"
    args = ["--datasets", "eurosat", "--methods", "zeroshot,gda", "--shots", "1", "--results", str(kept)]
    assert paper_grid.main([*args, "--seeds", "1"]) == 0
    cache = kept / "eurosat.h5"
    first = read_records(results_path(kept / "eurosat"))
    identity = _uuid(cache)
    assert sorted(r["method"] for r in first) == ["gda", "zeroshot"]

    assert paper_grid.main([*args, "--seeds", "1,2"]) == 0                  # seed 1 found: only seed 2 fitted
    records = read_records(results_path(kept / "eurosat"))
    assert _uuid(cache) == identity
    assert sorted((r["method"], r["seed"]) for r in records) == [("gda", 1), ("gda", 2), ("zeroshot", 1),
                                                                 ("zeroshot", 2)]

    assert paper_grid.main([*args, "--seeds", "1", "--shots", "2"]) == 0     # 2 shots: another cache, old results gone
    assert _uuid(cache) != identity
    assert sorted((r["method"], r["shots"]) for r in read_records(results_path(kept / "eurosat"))) == [
        ("gda", 2), ("zeroshot", 2)]
    assert "eurosat (C=10" in capsys.readouterr().out
