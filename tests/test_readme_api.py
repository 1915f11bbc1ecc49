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
def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    from clipbridge import cli
    shell, code = _api_example()
    monkeypatch.chdir(tmp_path)
    assert cli.main(shell.split()[1:] + ["--no-progress", "--workers", "0"]) == 0
    assert not (tmp_path / "my_shape.png").exists()         # the example makes its own image
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[:2]] == ["1", "2"]             # one test accuracy per seed
    assert printed[2].startswith("[") and len(eval(printed[2].split("] [")[0] + "]")) == 3
    assert list((tmp_path / "runs" / "shapes" / "semobridge").iterdir())
