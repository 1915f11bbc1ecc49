"""--threads on every command, $CLIPBRIDGE_THREADS, and the default that leaves busy cores alone."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.threads import ENV, available_cpus, default_threads, parse_threads, resolve_threads

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_leaves_one_core_per_busy_process():
    assert default_threads(cpus=2, load=0.0) == 2
    assert default_threads(cpus=2, load=1.1) == 1
    assert default_threads(cpus=2, load=6.0) == 1
    assert default_threads(cpus=16, load=3.4) == 13


def test_the_option_wins_over_the_environment_which_wins_over_the_default():
    assert resolve_threads("3", {ENV: "2"}) == (3, "--threads")
    assert resolve_threads(None, {ENV: "2"}) == (2, f"${ENV}")
    assert resolve_threads(None, {ENV: "all"}) == (available_cpus(), f"${ENV}")
    assert resolve_threads(None, {})[1] == "default"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_counts_are_refused_in_one_line(value):
    with pytest.raises(BridgeInputError, match=r"give a positive number of threads or 'all'"):
        parse_threads(value)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    environ = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          env=environ, timeout=120)


@pytest.mark.parametrize("command", ["extract", "fit", "evaluate", "predict", "bench", "analyze", "demo", "info",
                                     "methods", "recipe", "published", "fewshot"])
def test_every_command_offers_threads(command):
    from click.testing import CliRunner

    import clipbridge.cli as cli

    cli._add_commands()
    result = CliRunner().invoke(cli.group, [command, "--help"])
    assert "--threads N|all" in result.output


def test_a_tensor_command_runs_with_the_threads_asked_for(monkeypatch):
    import torch

    import clipbridge.cli as cli

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(ENV, raising=False)
        assert cli.main(["methods", "--threads", "1"]) == 0      # not a tensor command: nothing set
        assert cli.main(["fit", "--threads", "1", "--cache", "/nonexistent/x.h5"]) == 1
        assert torch.get_num_threads() == 1
        monkeypatch.setenv(ENV, "2")
        cli.main(["fit", "--cache", "/nonexistent/x.h5"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_bad_environment_value_is_one_error_line():
    result = _cli("methods", env={ENV: "lots"})
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: ${ENV} 'lots': give a positive number of threads or 'all'"


def test_the_threads_table_script_runs_valid_commands_at_1_2_and_all_threads():
    import click

    import clipbridge.cli as cli
    from clipbridge.evaluate.bench.threads import main, thread_counts, workloads

    import torch

    cli._add_commands()
    assert thread_counts()[0] == "1" and len(set(thread_counts())) == len(thread_counts())
    threads = torch.get_num_threads()
    try:
        for full in (False, True):
            for name, args in workloads(full).items():
                command = cli.group.commands[args[0]]
                with command.make_context(args[0], [*args[1:], "--threads", "1"]) as ctx:   # parses, runs nothing
                    assert ctx.command is command, name
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(SystemExit):
        main(["--workloads", "nope"])
    with pytest.raises(click.exceptions.NoSuchOption):
        cli.group.commands["fit"].make_context("fit", ["--no-such-option"])


def test_single_thread_restores_the_count_even_on_error():
    import torch

    from clipbridge.bridge.threads import single_thread

    before = torch.get_num_threads()
    with pytest.raises(ValueError):
        with single_thread():
            assert torch.get_num_threads() == 1
            raise ValueError("inside")
    assert torch.get_num_threads() == before


def test_map_single_threaded_keeps_order_runs_side_by_side_on_one_thread_each():
    import threading

    import torch

    from clipbridge.bridge.threads import map_single_threaded

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        barrier = threading.Barrier(2, timeout=20)           # both items must be running at once to pass it

        def work(i):
            barrier.wait()
            return i * 10, torch.get_num_threads(), torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        with torch.inference_mode():
            got = map_single_threaded(work, [3, 4])
        assert got == [(30, 1, False, True), (40, 1, False, True)]
        assert torch.get_num_threads() == 2
        assert map_single_threaded(lambda i: (i, torch.get_num_threads()), range(3), workers=1) == [(0, 1), (1, 1), (2, 1)]
    finally:
        torch.set_num_threads(before)
