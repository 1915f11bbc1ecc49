"""The README's Python API example runs as written (after its one extract command), offline."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_example() -> tuple[str, str]:
    """(the shell command, the Python code) of the README's API section."""
    text = README.read_text()
    section = text[text.index("<!-- api-example -->"):text.index("<!-- /api-example -->")]
    shell = re.search(r"```\n(clipbridge extract [^\n]+)\n```", section).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return shell, code


@pytest.mark.slow
def test_the_readme_api_example_runs_and_prints_the_right_values(tmp_path, monkeypatch, capsys):
    """The example's printed accuracies and prediction equal what the fitted state gives on the cache's test
    embeddings, computed here from the state's logits (not from the records the API builds)."""
    import ast

    import torch

    from clipbridge import cli
    from clipbridge.bridge.registry import get_method
    from clipbridge.cache.reader import open_cache
    from clipbridge.extract.shapes import item_name, load_image

    shell, code = _api_example()
    monkeypatch.chdir(tmp_path)
    assert cli.main(shell.split()[1:] + ["--no-progress", "--workers", "0"]) == 0
    assert not (tmp_path / "my_shape.png").exists()         # the example makes its own image
    capsys.readouterr()
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    run = namespace["run"]                                                  # the reloaded run
    cache = open_cache(next((tmp_path / "cache").rglob("shapes.h5")))
    queries, labels, paths = cache.plain("test")
    method = get_method(run.method)
    logits = method.logits(run.state, queries)                               # [S, N, C]
    for line, seed, seed_logits in zip(printed[:2], run.seeds, logits):
        expected = 100.0 * float((seed_logits.argmax(-1) == labels).double().mean())
        printed_seed, printed_accuracy = line.split()
        assert int(printed_seed) == seed and abs(float(printed_accuracy) - round(expected, 2)) <= 0.005 + 1e-9
    assert run.seeds == [1, 2] and 0 < float(printed[0].split()[1]) <= 100
    classes_text, probabilities_text = printed[2].split("] [")
    classes, probabilities = ast.literal_eval(classes_text + "]"), ast.literal_eval("[" + probabilities_text)
    row = paths.index(item_name("test", 3, 0))                              # the same image, in the cache
    temperature = run.state.info["calibration"]["temperature"][0]             # probabilities are calibrated
    top = torch.softmax(logits[0, row].double() / temperature, -1).topk(3)
    assert classes == [run.classnames[i] for i in top.indices.tolist()]
    assert probabilities == pytest.approx(top.values.tolist(), abs=1e-3)
    assert list((tmp_path / "runs" / "shapes" / "semobridge").iterdir())
