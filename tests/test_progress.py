"""Training methods report their progress (steps and best validation accuracy so far) to a listener; `fit`
and `bench` draw it as a bar on a terminal only, and never with --no-progress."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from synthetic_tasks import make_task

from clipbridge.bridge.progress import listening, progress
from clipbridge.bridge.registry import get_method
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.evaluate.fitting import progress as terminal
from clipbridge.evaluate.commands.main import bench, fit

SEMO_T = {"steps": 30, "warmup": 3, "lr": 2e-3, "search_rounds": 1, "search_per_round": 8}


class Recorder:
    def __init__(self):
        self.events = []

    def begin(self, total, unit):
        self.events.append(("begin", total, unit))

    def advance(self, steps, best):
        self.events.append(("advance", steps, best))

    def end(self):
        self.events.append(("end",))


@pytest.fixture(scope="module")
def task():
    return make_task(seeds=(1, 2), classes=5, shots=3, dim=12, width=16)[0]


def test_semobridge_t_reports_every_step_and_the_best_validation_accuracy_it_keeps(task):
    recorder = Recorder()
    with listening(recorder):
        state = get_method("semobridge-t").fit(task, **SEMO_T)
    begin, *advances, end = recorder.events
    assert begin == ("begin", 30, "step") and end == ("end",)
    assert sum(steps for _, steps, _ in advances) == 30
    bests = [best for _, _, best in advances if best is not None]
    assert len(bests) == 29                                  # every update after the first is validated
    assert bests == sorted(bests)                            # a best so far never falls
    kept = state.info["selection_val_accuracy"]
    assert bests[-1] == pytest.approx(sum(kept) / len(kept), abs=1e-4)


def test_nobody_listening_costs_nothing_and_a_listener_ends_even_when_the_loop_fails():
    with progress(5) as report:                              # no listener: advance is a no-op
        report.advance(1, torch.tensor([50.0]))
    recorder = Recorder()
    with pytest.raises(RuntimeError), listening(recorder), progress(5, "epoch") as report:
        report.advance(2)
        raise RuntimeError("boom")
    assert recorder.events == [("begin", 5, "epoch"), ("advance", 2, None), ("end",)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("progress") / "syn.h5", classes=5, train_per_class=4,
                                 dim=12, width=16, val=20, test=30, families={"flip": 1, "tip": 3}, seed=3)


def _run(command, args, monkeypatch, tty):
    monkeypatch.setattr(terminal, "on_terminal", lambda: tty)
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stderr


@pytest.mark.parametrize("tty, flag, drawn", [(True, [], True), (True, ["--no-progress"], False),
                                              (False, [], False)])
def test_fit_draws_a_training_bar_on_a_terminal_only(tmp_path, cache, monkeypatch, tty, flag, drawn):
    args = ["--cache", cache, "--method", "semobridge-t", "--shots", "2", "--seeds", "1-2", "--device", "cpu",
            "--runs", tmp_path / "runs", "--results", tmp_path / "results", "--recipe", "uniform",
            *[f"--hparam={k}={v}" for k, v in SEMO_T.items()], *flag]
    stderr = _run(fit, args, monkeypatch, tty)
    assert ("semobridge-t 2-shot" in stderr and "30/30" in stderr and "best val" in stderr) is drawn
    assert drawn or stderr == ""


def test_bench_draws_training_bars_below_its_own_bar(tmp_path, cache, monkeypatch):
    args = ["--cache", cache, "--methods", "semobridge-t", "--shots", "1,2", "--seeds", "1", "--device", "cpu",
            "--recipe", "uniform", *[f"--hparam=semobridge-t.{k}={v}" for k, v in SEMO_T.items()]]
    stderr = _run(bench, [*args, "--results", tmp_path / "shown"], monkeypatch, True)
    assert "bench" in stderr and "semobridge-t 1-shot" in stderr and "semobridge-t 2-shot" in stderr
    assert "2/2 " in stderr                                   # the bench bar counts its two cells
    assert _run(bench, [*args, "--results", tmp_path / "quiet", "--no-progress"], monkeypatch, True) == ""


@pytest.mark.parametrize("method, hparams, steps", [
    ("tip-adapter-f", {"epochs": 4, "batch_size": 4}, 4 * 4),                 # 15 shots -> ceil(15 / 4) per epoch
    ("cmm", {"steps": 12, "eval_every": 5}, 12),
    ("clip-adapter", {"epochs": 3, "batch_size": 8}, 3 * 2),
    ("ape-t", {"epochs": 2, "batch_size": 0}, 2),
])
def test_trained_baselines_report_their_steps_and_best_validation_accuracy(task, method, hparams, steps):
    recorder = Recorder()
    with listening(recorder):
        state = get_method(method).fit(task, **hparams)
    begin, *advances, end = recorder.events
    assert begin == ("begin", steps, "step") and end == ("end",)
    assert sum(n for _, n, _ in advances) == steps
    bests = [best for _, _, best in advances]
    assert None not in bests and bests == sorted(bests)
    curves = torch.tensor(state.info["train_val_accuracy"])                       # [S, evaluations]
    assert bests[-1] == pytest.approx(float(curves.max(1).values.mean()), abs=1e-4)   # the kept step's accuracy
