"""The GPU check stays runnable: its smoke mode runs every section on the CPU in an interpreter that sees
only what a stock CUDA PyTorch image has (no MLflow, Ray, decord, PyAV, pydantic, matplotlib, FastAPI...)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
# The project's dependencies a stock PyTorch image lacks, by distribution/import name (lower case).
NOT_IN_A_STOCK_IMAGE = {"mlflow", "mlflow_skinny", "mlflow_tracing", "ray", "decord", "av", "pydantic",
                        "pydantic_core", "pydantic_settings", "matplotlib", "optuna", "fastapi", "fastapi_offline",
                        "uvicorn", "uvloop", "httptools", "sqlalchemy", "httpx", "rich", "alembic", "flask",
                        "schemathesis", "hypothesis"}


def stock_site_packages(folder: Path) -> Path:
    """A site-packages view (symlinks) holding every installed package but those a stock image lacks."""
    site = Path(torch.__file__).resolve().parents[1]
    folder.mkdir()
    for entry in site.iterdir():
        name = entry.name.split("-")[0].split(".")[0].lower()  # "mlflow_skinny-3.17.0.dist-info" -> "mlflow_skinny"
        if name not in NOT_IN_A_STOCK_IMAGE and not entry.name.endswith(".pth"):
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_without_the_service_stack(tmp_path, attnlab_home):
    site = stock_site_packages(tmp_path / "site-packages")
    results = tmp_path / "results.json"
    # -S: no site-packages of the venv, no .pth files (the editable install); only the filtered view.
    done = subprocess.run([sys.executable, "-S", str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                           "--json", str(results)],
                          env={"PYTHONPATH": f"{ROOT}:{site}", "ATTNLAB_HOME": str(attnlab_home),
                               "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    figures = json.loads(results.read_text())
    assert figures["smoke"] is True
    assert figures["se_resnet"]["images_per_s"]["ours"] > 0 and figures["se_resnet"]["bar"] == 0.95
    assert set(figures["nonlocal_networks"]) == {"c2d_resnet_tiny", "i3d_resnet_tiny"}
    assert all(0 < row["flop_ratio"] < 1 for row in figures["nonlocal_networks"].values())  # blocks add FLOPs
    assert [row["N"] for row in figures["nonlocal_block"]["rows"]] == [49, 98]
    assert figures["compile"]["compiled_steps_per_s"] > 0
    assert figures["ddp"] == {**figures["ddp"], "strategy": "DDPStrategy", "world_size": 1, "backend": "gloo",
                              "loss_finite": True}
