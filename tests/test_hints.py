"""Hints tell users what works: a hint never suggests the option that just failed."""
from __future__ import annotations

import clipbridge.cli as cli


def test_the_uniform_recipe_missing_a_text_set_does_not_suggest_itself(tmp_path, capsys):
    from clipbridge.cache.synthetic import write_synthetic_cache

    path = write_synthetic_cache(tmp_path / "c.h5", classes=3, train_per_class=2, dim=8, width=6, val=6, test=6)
    import h5py

    with h5py.File(path, "r") as handle:
        sets = list(handle["text"].keys())
    code = cli.main(["fit", "--cache", str(path), "--recipe", "uniform", "--prompts", "templates", "--shots", "1",
                     "--seeds", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "--recipe uniform" not in err
    assert err.rstrip().endswith(f"or fit with --prompts {','.join(sets)}")
