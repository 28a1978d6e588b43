"""Measured choices: the fastest candidate wins, once per machine, remembered in memory and on disk."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from modules import autotune

CPU = torch.device("cpu")


def counting(name, calls, seconds=0.0):
    def run():
        calls.append(name)
        time.sleep(seconds)
    return run


def test_the_measured_fastest_candidate_wins_and_is_remembered():
    autotune.forget()
    calls = []
    candidates = {"slow": counting("slow", calls, 0.02), "fast": counting("fast", calls)}
    assert autotune.choose("test-topic", {"n": 1}, candidates, CPU, repeats=2) == "fast"
    assert calls.count("slow") == calls.count("fast") == 3  # one warm-up and two timed runs each
    assert autotune.choose("test-topic", {"n": 1}, candidates, CPU) == "fast"
    assert len(calls) == 6  # remembered: nothing ran again


def test_a_new_process_reads_the_choice_from_disk(attnlab_home):
    autotune.forget()
    autotune.choose("test-topic", {"n": 2}, {"a": lambda: time.sleep(0.02), "b": lambda: None}, CPU)
    assert autotune.cache_path() == attnlab_home / "cache" / "measured-choices.sqlite"
    autotune.forget()  # as a fresh process: only the disk cache is left

    def must_not_run():
        raise AssertionError("a cached choice was measured again")

    assert autotune.choose("test-topic", {"n": 2}, {"a": must_not_run, "b": must_not_run}, CPU) == "b"


def test_the_key_names_the_machine_so_another_thread_count_measures_again():
    autotune.forget()
    calls = []
    candidates = {"only": counting("only", calls)}
    threads = torch.get_num_threads()
    autotune.choose("test-topic", {"n": 3}, candidates, CPU, repeats=1)
    try:
        torch.set_num_threads(threads + 1)
        autotune.choose("test-topic", {"n": 3}, candidates, CPU, repeats=1)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 4
    assert f"{threads} threads" in autotune.machine(CPU) and autotune.cpu_model() in autotune.machine(CPU)


def test_a_choice_ranks_must_share_ignores_the_thread_count():
    # Lightning gives each DDP rank its share of the cores after rank 0 decided the precision: the ranks
    # must read rank 0's choice, not measure their own.
    autotune.forget()
    calls = []
    candidates = {"only": counting("only", calls)}
    threads = torch.get_num_threads()
    autotune.choose("test-topic", {"n": 7}, candidates, CPU, repeats=1, threads_matter=False)
    try:
        torch.set_num_threads(threads + 1)
        autotune.choose("test-topic", {"n": 7}, candidates, CPU, repeats=1, threads_matter=False)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2


def test_decide_may_demand_a_margin_before_leaving_the_default(monkeypatch):
    autotune.forget()
    monkeypatch.setattr(autotune, "time_candidates", lambda candidates, device, repeats=3: {"safe": 1.0, "bold": 0.9})
    choice = autotune.choose("test-topic", {"n": 4}, {"safe": None, "bold": None}, CPU,
                             decide=lambda seconds: "bold" if seconds["safe"] / seconds["bold"] >= 1.2 else "safe")
    assert choice == "safe"


def test_an_unusable_cache_only_costs_time(attnlab_home, caplog):
    autotune.forget()
    (attnlab_home / "cache").write_text("a file where the cache folder should be")
    assert autotune.choose("test-topic", {"n": 5}, {"a": lambda: time.sleep(0.02), "b": lambda: None}, CPU) == "b"
    assert "measured-choice cache" in caplog.text


@pytest.mark.slow
def test_processes_starting_together_measure_once(attnlab_home, tmp_path):
    # Two processes (as DDP ranks, or Tune trials) need the same choice at once: the file lock lets one
    # measure; the other waits and reads its result.
    log = tmp_path / "measurements.log"
    script = textwrap.dedent(f"""
        import time, torch
        from modules import autotune
        def measured(candidates, device, repeats=3):
            with open({str(log)!r}, "a") as out:
                out.write("measured\\n")
            time.sleep(1.0)
            return {{"a": 2.0, "b": 1.0}}
        autotune.time_candidates = measured
        print(autotune.choose("test-topic", {{"n": 6}}, {{"a": None, "b": None}}, torch.device("cpu")))
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), ATTNLAB_HOME=str(attnlab_home))
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300)[0].strip() for process in processes]
    assert outputs == ["b", "b"]
    assert log.read_text().splitlines() == ["measured"]
