"""Installing clipbridge provides one top-level package, `clipbridge` (plus the console script), builds
without setuptools warnings, and `python cli.py` runs the checkout it sits in."""
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
STAGES = ("cli", "cache", "bridge", "evaluate", "extract")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_installed_environment_has_no_top_level_stage_modules(tmp_path):
    result = _python(f"""
        import importlib.util as u
        for name in {STAGES!r}:
            spec = u.find_spec(name)
            print(name, spec.origin if spec else None)
        import clipbridge.cli, clipbridge.bridge.task, clipbridge.evaluate.tables
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
        import evaluate, clipbridge.evaluate.records as ours
        print(evaluate.WHO, ours.RESULTS_FILE)
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["someone", "else", "results.jsonl"]


@pytest.mark.slow
def test_wheel_and_editable_builds_hold_only_clipbridge_and_warn_nothing(tmp_path):
    pytest.importorskip("setuptools.build_meta")
    script = textwrap.dedent("""
        import os, sys, warnings, zipfile
        import setuptools.build_meta as backend
        out = sys.argv[1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = [backend.build_wheel(out), backend.build_editable(out)]
        for w in caught:
            print("WARNING", w.category.__name__, str(w.message).splitlines()[0])
        for name in names:
            with zipfile.ZipFile(os.path.join(out, name)) as z:
                print("TOP", name, " ".join(sorted({n.split("/")[0] for n in z.namelist()})))
        """)
    (tmp_path / "build.py").write_text(script)
    build = tmp_path / "wheels"
    build.mkdir()
    leftover = REPO / "build"                               # setuptools' work folder, removed if we made it
    made_here = not leftover.exists()
    try:
        result = subprocess.run([sys.executable, str(tmp_path / "build.py"), str(build)], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
    finally:
        if made_here:
            shutil.rmtree(leftover, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("WARNING")], lines
    tops = {line.split()[1]: set(line.split()[2:]) for line in lines if line.startswith("TOP")}
    wheel = next(name for name in tops if "editable" not in name)
    editable = next(name for name in tops if "editable" in name)
    assert tops[wheel] == {"clipbridge", wheel.split("-")[0] + "-" + wheel.split("-")[1] + ".dist-info"}
    assert {t for t in tops[editable] if not t.endswith(".dist-info")} == {"__editable__.clipbridge-0.1.0.pth"}
    with zipfile.ZipFile(build / wheel) as archive:
        names = set(archive.namelist())
    assert "clipbridge/cli.py" in names and "clipbridge/extract/weights/clipbridge-tiny-shapes.safetensors" in names
    assert not any(name.startswith("clipbridge/tests/") for name in names)


def test_python_cli_py_runs_the_checkout_beside_it(tmp_path):
    """`python cli.py` imports the package from its own folder, wherever clipbridge is installed from."""
    result = _python(f"""
        import runpy, sys
        sys.argv = ["cli.py", "--help"]
        try:
            runpy.run_path({str(REPO / "cli.py")!r}, run_name="__main__")
        except SystemExit as done:
            print("EXIT", done.code)
        print("PACKAGE", sys.modules["clipbridge"].__file__)
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: clipbridge" in result.stdout and "EXIT 0" in result.stdout
    package = result.stdout.split("PACKAGE ")[1].strip()
    assert Path(package) == REPO / "__init__.py"


def test_every_package_folder_is_installed():
    """setup.cfg lists its packages explicitly (the root is the package): none may be forgotten."""
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}
    found = {"clipbridge"} | {
        "clipbridge." + ".".join(path.parent.relative_to(REPO).parts)
        for path in REPO.rglob("__init__.py")
        if path.parent != REPO and not any(part.startswith(".") or part in ("tests", "build", "src") for part in
                                           path.relative_to(REPO).parts)}
    assert listed == found, (sorted(found - listed), sorted(listed - found))
