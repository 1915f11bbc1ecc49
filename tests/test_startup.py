"""`clipbridge --help`, `fewshot` and `info` answer without importing torch or open_clip (they start in a
fraction of a second; the figures are in FIGURES.md)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cache_factory import write_cache

HEAVY = ("torch", "open_clip", "matplotlib")


def _modules_after(args: list[str]) -> tuple[set[str], str]:
    code = textwrap.dedent(f"""
        import json, sys
        from clipbridge.cli import main
        status = main({args!r})
        print(json.dumps({{"status": status, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 0, done.stdout
    return set(result["heavy"]), done.stdout


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["extract", "--help"]])
def test_help_imports_nothing_heavy(args):
    heavy, _ = _modules_after(args)
    assert not heavy, heavy


def test_info_and_fewshot_import_nothing_heavy(tmp_path, shared_dir):
    cache = write_cache(tmp_path / "c.h5")
    heavy, out = _modules_after(["info", str(cache)])
    assert not heavy and "complete, valid" in out
    split_file = shared_dir / "data" / "coop" / "split_zhou_DescribableTextures.json"
    heavy, out = _modules_after(["fewshot", "--split-file", str(split_file), "--shots", "16", "--seed", "1"])
    assert not heavy and '"train": [' in out
