"""Installing clipbridge provides one top-level package, `clipbridge` (plus the console script), whose wheel
holds every module of the tree, builds without setuptools warnings, and `python cli.py` runs the installed
package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("cli", "errors", "cache", "bridge", "evaluate", "extract")
NOT_PACKAGE = ("tests", "build", "docs")                 # folders of the checkout that are not installed


def _python(code: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    """A fresh interpreter (PYTHONPATH kept: it is how a checkout may point at its package)."""
    return subprocess.run([sys.executable, *flags, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _tree_modules() -> set[str]:
    """Every module file of the checkout that belongs to the package, as its path in the wheel."""
    found = set()
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts) or parts[0] in NOT_PACKAGE:
            continue
        if parts == ("setup.py",):
            continue
        found.add("clipbridge/" + "/".join(parts))
    return found


def test_installed_environment_has_no_top_level_stage_modules(tmp_path):
    result = _python(f"""
        import importlib.util as u
        for name in {STAGES!r}:
            spec = u.find_spec(name)
            print(name, spec.origin if spec else None)
        import clipbridge.cli, clipbridge.bridge.task, clipbridge.evaluate.reporting.tables
        print("clipbridge", clipbridge.__file__)
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for name in STAGES:
        assert lines[name] in ("None",) or str(REPO) not in lines[name], f"top-level {name!r} is ours: {lines[name]}"
    assert Path(lines["clipbridge"]).resolve().parent == REPO


def test_a_module_named_evaluate_elsewhere_does_not_shadow_ours(tmp_path):
    """Hugging Face's `evaluate` (or any other) keeps its name; ours is clipbridge.evaluate."""
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "__init__.py").write_text("WHO = 'someone else'\n")
    result = _python("""
        import evaluate, clipbridge.evaluate.reporting.records as ours
        print(evaluate.WHO, ours.RESULTS_FILE)
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["someone", "else", "results.jsonl"]


def test_every_folder_with_modules_is_a_package():
    """setup.py installs what package discovery finds: a folder of modules without __init__.py would be
    left out of the wheel."""
    folders = {Path(module).parent for module in _tree_modules()}
    missing = sorted(str(folder) for folder in folders if f"{folder}/__init__.py" not in _tree_modules())
    assert not missing


@pytest.mark.slow
def test_wheel_holds_every_module_of_the_tree_and_builds_warn_nothing(tmp_path):
    pytest.importorskip("setuptools.build_meta")
    script = textwrap.dedent("""
        import os, sys, warnings, zipfile
        import setuptools.build_meta as backend
        out = sys.argv[1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = [backend.build_wheel(out), backend.build_editable(out)]
        for w in caught:   # InformationOnly: the editable install maps the root through a finder (expected)
            if w.category.__name__ != "InformationOnly":
                print("WARNING", w.category.__name__, str(w.message).splitlines()[0])
        for name in names:
            with zipfile.ZipFile(os.path.join(out, name)) as z:
                print("TOP", name, " ".join(sorted({n.split("/")[0] for n in z.namelist()})))
        """)
    (tmp_path / "build.py").write_text(script)
    build = tmp_path / "wheels"
    build.mkdir()
    made_here = [path for path in (REPO / "build", REPO / "clipbridge.egg-info") if not path.exists()]
    try:
        result = subprocess.run([sys.executable, str(tmp_path / "build.py"), str(build)], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
    finally:
        for path in made_here:                             # setuptools' work folders, removed if we made them
            shutil.rmtree(path, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("WARNING")], lines
    tops = {line.split()[1]: set(line.split()[2:]) for line in lines if line.startswith("TOP")}
    wheel = next(name for name in tops if "editable" not in name)
    editable = next(name for name in tops if "editable" in name)
    assert tops[wheel] == {"clipbridge", wheel.split("-")[0] + "-" + wheel.split("-")[1] + ".dist-info"}
    # the editable install maps `clipbridge` onto the checkout through a finder; nothing else is importable
    assert {t for t in tops[editable] if not t.endswith(".dist-info")} <= {
        "__editable__.clipbridge-0.1.0.pth", "__editable___clipbridge_0_1_0_finder.py"}
    with zipfile.ZipFile(build / wheel) as archive:
        names = set(archive.namelist())
    assert {name for name in names if name.endswith(".py")} == _tree_modules()
    assert {"clipbridge/evaluate/reporting/published.csv",
            "clipbridge/extract/weights/clipbridge-tiny-shapes.safetensors"} <= names
    assert any(name.startswith("clipbridge/extract/model_configs/") and name.endswith(".json") for name in names)


def test_python_cli_py_runs_the_installed_package(tmp_path):
    """`python cli.py` imports the installed clipbridge (this checkout), not its folders as top-level modules."""
    result = _python(f"""
        import runpy, sys
        sys.path.insert(0, {str(REPO)!r})                 # what `python cli.py` does
        sys.argv = ["cli.py", "--help"]
        try:
            runpy.run_path({str(REPO / "cli.py")!r}, run_name="__main__")
        except SystemExit as done:
            print("EXIT", done.code)
        print("PACKAGE", sys.modules["clipbridge"].__file__)
        print("TOP", [name for name in ("cache", "bridge", "evaluate", "extract", "errors") if name in sys.modules])
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: clipbridge" in result.stdout and "EXIT 0" in result.stdout
    package = result.stdout.split("PACKAGE ")[1].splitlines()[0].strip()
    assert Path(package).resolve() == REPO / "__init__.py"
    assert "TOP []" in result.stdout


def test_python_cli_py_without_the_package_says_how_to_install_it(tmp_path):
    result = subprocess.run([sys.executable, "-I", "-S", str(REPO / "cli.py"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the clipbridge package is not installed; run `make` (or `pip install -e .`) here first"]
