"""evaluate.reporting.records: whole-line locked appends, concurrent writers, malformed lines skipped with a warning."""
from __future__ import annotations

import json
import multiprocessing

import pytest

from clipbridge.evaluate.reporting.records import (KEY_FIELDS, append_records, latest_by_key, make_record, read_records,
                              record_key)


def _record(seed=1, method="zeroshot", test=50.0, **extra):
    return make_record(dataset="d", model="m", pretrained="p", method=method, hparams={"alpha": 1.0},
                       shots=4, seed=seed, views=1, view_families=["plain"], prompt_sets=["ensemble"], protocol="clean",
                       val_accuracy=40.0, test_accuracy=test, fit_seconds=0.1, search_seconds=0.0,
                       device="cpu", cache_id="abc", val_is_test=False, **extra)


def test_record_holds_every_documented_field():
    record = _record()
    for name in ("dataset", "model", "pretrained", "method", "hparams", "shots", "seed", "views", "view_families",
                 "prompt_sets", "protocol", "val_accuracy", "test_accuracy", "fit_seconds", "search_seconds",
                 "device", "cache_id", "package_version", "time", "val_is_test", "eval_dataset"):
        assert name in record
    assert record["eval_dataset"] == "d"
    assert set(KEY_FIELDS) <= set(record)


def test_append_then_read_round_trips(tmp_path):
    path = tmp_path / "results.jsonl"
    assert append_records(path, [_record(1), _record(2)]) == 2
    assert [r["seed"] for r in read_records(path)] == [1, 2]


def test_malformed_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    append_records(path, [_record(1)])
    with open(path, "a") as handle:
        handle.write("{not json\n")
    append_records(path, [_record(3)])
    with pytest.warns(UserWarning, match=r"results\.jsonl:2: malformed"):
        records = read_records(path)
    assert [r["seed"] for r in records] == [1, 3]


def test_append_after_a_truncated_line_keeps_the_new_record_readable(tmp_path):
    path = tmp_path / "results.jsonl"
    append_records(path, [_record(1)])
    with open(path, "a") as handle:
        handle.write(json.dumps(_record(2))[:30])          # a writer killed mid-line
    append_records(path, [_record(3)])
    with pytest.warns(UserWarning, match=":2:"):
        assert [r["seed"] for r in read_records(path)] == [1, 3]


def test_latest_record_of_a_key_wins_and_key_ignores_timings():
    first, second = _record(1, test=10.0), _record(1, test=20.0)
    second["fit_seconds"] = 99.0
    assert record_key(first) == record_key(second)
    assert [r["test_accuracy"] for r in latest_by_key([first, second]).values()] == [20.0]
    assert record_key(_record(1, eval_dataset="ood")) != record_key(first)


def _writer(path, worker, count):
    for i in range(count):
        append_records(path, [_record(seed=worker * 1000 + i, method=f"w{worker}")])


def test_two_processes_appending_concurrently_lose_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(path, w, 150)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    records = read_records(path)
    assert len(records) == 300
    assert {r["seed"] for r in records} == {w * 1000 + i for w in (1, 2) for i in range(150)}
    assert path.read_text().count("\n") == 300


def test_appending_and_reading_leave_no_lock_file_beside_the_results(tmp_path):
    path = tmp_path / "results.jsonl"
    append_records(path, [_record()])
    assert read_records(path) and sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]
