"""Real Ray Tune searches on a local 2-CPU Ray instance: ASHA, MLflow nesting, registry, retries, resume.

The data are tiny synthetic videos and the network is `c2d_resnet_tiny` (the smallest real backbone:
~0.3M parameters, a 2-epoch fit trains in ~3 s on one thread). Trials are seeded and run with one
torch thread, so their metric values repeat from run to run; the grid lists the two learning trials
first and the two whose learning rate makes the loss explode (lr 10) last, so ASHA, which keeps only
the better half at each rung, must stop the late, worse ones.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from datamodules.synthetic import make_motion_videos

    return make_motion_videos(tmp_path_factory.mktemp("videos"), num_classes=2, videos_per_class=6,
                              frames=16, size=(32, 32))


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def search_raw(videos, name, **search):
    return {
        "name": name,
        "data": {"kind": "video", "dataset": "folder", "root": str(videos), "batch_size": 4, "clip_len": 4,
                 "frame_interval": 2, "short_side": 32, "crop_size": 32, "test_clips": 1},
        "model": {"family": "se", "backbone": "c2d_resnet_tiny", "placement": "se-stage3", "reduction": 4},
        "optim": {"lr": 0.05},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False},
        "tracking": {"figures": False, "experiment": "searches"},
        "search": {"metric": "train/loss", "mode": "min", "max_concurrent_trials": 2,
                   "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
                   "resources": {"cpu": 1}, "max_failures": 2, **search},
    }


ABLATION_SPACE = {"optim.lr": {"grid": [0.05, 10.0]}, "model.placement": {"grid": ["se-stage3", "se-stage4"]}}


@pytest.fixture(scope="module")
def finished_search(videos, ray_instance, tmp_path_factory):
    """One search shared by the tests below: 4 trials, ASHA, first trial attempt fails on purpose."""
    from tuning.config import validate_search_config
    from tuning.search import run_search

    home = tmp_path_factory.mktemp("home")
    marker = home / "fail-once"

    class FailOnce(pl.Callback):
        """The first trial attempt to start training finds no marker: it leaves one and fails.
        Defined here so that it reaches the trials pickled by value (they cannot import tests)."""

        def on_train_start(self, trainer, pl_module):
            if not marker.exists():
                marker.write_text("the first trial attempt failed on purpose\n")
                raise RuntimeError(f"injected failure ({marker}); the retry will run")

    saved = {key: os.environ.get(key) for key in ("ATTNLAB_HOME",)}
    os.environ.update(ATTNLAB_HOME=str(home))
    try:
        cfg = validate_search_config(search_raw(videos, "asha-search", space=ABLATION_SPACE,
                                                columns="optim.lr"))
        started = time.monotonic()
        result = run_search(cfg, trial_callbacks=[FailOnce()])
        print(f"search of {len(result.trials)} trials took {time.monotonic() - started:.1f} s")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return result, home, marker


def mlflow_client(home):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def child_runs(client, parent_run_id):
    experiment = client.get_experiment_by_name("searches").experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_asha_search_nests_one_child_run_per_trial_and_stops_the_worse_trials(finished_search):
    result, home, _ = finished_search
    client = mlflow_client(home)
    assert len(result.trials) == 4
    children = child_runs(client, result.parent_run_id)
    assert sorted(run.info.run_name for run in children) == sorted(t["trial_name"] for t in result.trials)
    assert not [run for run in children if run.info.status == "RUNNING"]
    stopped = [t for t in result.trials if t["stopped_early"]]
    assert any(t["config"]["optim.lr"] == 10.0 for t in stopped)
    for trial in stopped:
        run = client.get_run(trial["run_id"])
        assert run.info.status == "KILLED" and run.data.tags["attnlab.stopped_early"] == "true"
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def test_search_logs_the_ablation_table_and_registers_the_best_model_as_champion(finished_search):
    result, home, _ = finished_search
    client = mlflow_client(home)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "ablation")}
    assert artifacts >= {"ablation/ablation.md", "ablation/ablation.csv", "ablation/ablation.png"}
    table = Path(client.download_artifacts(result.parent_run_id, "ablation/ablation.md")).read_text()
    assert "| placement | lr=0.05 | lr=10.0 |" in table and "| se-stage3 |" in table
    assert result.best["config"]["optim.lr"] == 0.05
    version = client.get_model_version_by_alias("asha-search", "champion")
    assert str(version.version) == result.model_version and version.run_id == result.best["run_id"]


def test_a_failed_trial_attempt_is_retried_and_the_search_completes(finished_search):
    result, _, marker = finished_search
    assert marker.exists()  # the first attempt of some trial failed on purpose ...
    assert all(t["error"] is None for t in result.trials)  # ... and its retry finished
    assert all(t["value"] is not None for t in result.trials)  # every trial trained and reported
    assert any(t["finished"] for t in result.trials)


def test_registering_a_model_that_does_not_beat_the_champion_makes_it_a_candidate(finished_search):
    from tuning.search import register_best

    result, home, _ = finished_search
    # The best trial again cannot beat itself (strictly) on the same metric.
    version, alias = register_best(result.config, f"sqlite:///{home / 'mlflow.db'}", result.best, "asha-search")
    assert alias == "candidate" and int(version) == int(result.model_version) + 1
    client = mlflow_client(home)
    assert str(client.get_model_version_by_alias("asha-search", "champion").version) == result.model_version


def run_tune(args, home, **popen):
    environment = {**os.environ, "ATTNLAB_HOME": str(home), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "tune", *args], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def terminated_trials(folder: Path) -> set[str]:
    names = set()
    for state in folder.glob("experiment_state-*.json"):
        try:
            trials = json.loads(state.read_text())["trial_data"]
        except (json.JSONDecodeError, KeyError):
            continue  # being written
        for trial_json, _ in trials:
            trial = json.loads(trial_json)
            if trial.get("status") == "TERMINATED":
                names.add(trial["trial_id"])
    return names


def test_a_killed_search_resumes_without_repeating_finished_trials(videos, attnlab_home, tmp_path):
    config = tmp_path / "search.yaml"
    raw = search_raw(videos, "resumable", space={"optim.lr": {"grid": [0.05, 0.02, 0.01]}},
                     max_concurrent_trials=1, scheduler={"kind": "fifo"})
    config.write_text(yaml.safe_dump(raw))
    folder = attnlab_home / "searches" / "resumable"

    driver = run_tune(["--config", str(config)], attnlab_home)
    deadline = time.monotonic() + 150
    while not terminated_trials(folder) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
    finished_before = terminated_trials(folder)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    driver.wait()
    assert finished_before, "no trial finished before the deadline"
    lines_before = {t: (folder / f"trial-{t}" / "result.json").read_text() for t in finished_before}

    resumed = run_tune(["--resume", "resumable"], attnlab_home)
    output, _ = resumed.communicate(timeout=200)
    assert resumed.returncode == 0, output[-3000:]
    assert "search resumable: 3 trials" in output
    for trial, text in lines_before.items():  # finished trials were not run again
        assert (folder / f"trial-{trial}" / "result.json").read_text() == text
    client = mlflow_client(attnlab_home)
    parent = json.loads((folder / "search.json").read_text())["parent_run_id"]
    children = child_runs(client, parent)
    assert len(children) == 3 and {run.info.status for run in children} == {"FINISHED"}
