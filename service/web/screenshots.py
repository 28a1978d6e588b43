"""`make screenshots`: the web page's main views at 1400x900 and 390x844, from a real service with real jobs.

Starts `attnlab serve` in a fresh home on synthetic Fashion-MNIST-format data, runs a few tiny jobs
to give every view something to show (a trained and registered model, a finished search with its
trials and ablation table, a failed job, one running, one queued, one cancelled), then drives
headless Chromium over the page and writes PNGs:

    .venv/bin/python -m service.web.screenshots --out screenshots     (about 4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from service.web.headless import Browser, Page

TOKEN = "screenshots-token"
SIZES = {"desktop": (1400, 900, False), "phone": (390, 844, True)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_config(name: str, *, steps: int, root: str = "tiny-fmnist", register_as: str | None = None) -> dict:
    return {"name": name,
            "data": {"kind": "image", "dataset": "fashion_mnist", "root": root, "batch_size": 16,
                     "num_workers": 0, "augment": False},
            "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-stage4", "reduction": 8},
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 2, "max_steps": steps,
                        "limit_val_batches": 2, "limit_test_batches": 2, "log_every_n_steps": 1,
                        "checkpoint_every_n_steps": 20, "enable_progress_bar": False},
            "tracking": {"experiment": "screenshots", "register_as": register_as, "figures": False}}


def search_config() -> dict:
    config = run_config("se-placement-x-reduction", steps=12)
    config["search"] = {"space": {"model.placement": {"grid": ["se-stage3", "se-stage4"]},
                                  "model.reduction": {"grid": [4, 16]}},
                        "algorithm": "grid", "scheduler": {"kind": "fifo"}, "max_concurrent_trials": 1,
                        "metric": "train/loss", "mode": "min", "report_every_n_steps": 4}
    return config


class Service:
    def __init__(self, home: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ATTNLAB_HOME": str(home), "ATTNLAB_TOKEN": TOKEN, "ATTNLAB_PORT": str(self.port),
               "ATTNLAB_SLOTS": "1", "ATTNLAB_DATA_ROOTS": str(home / "data"), "ATTNLAB_POLL_INTERVAL": "0.5",
               "ATTNLAB_MLFLOW_UI_PORT": str(free_port()), "ATTNLAB_ACCESS_LOG": "false"}
        self.process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                        stdout=open(home / "serve.out", "wb"), stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"attnlab serve did not start; see {home / 'serve.out'}")
            time.sleep(0.3)

    def submit(self, config: dict, search: bool = False) -> int:
        response = self.http.post("/searches" if search else "/jobs", content=yaml.safe_dump(config),
                                  headers={"Content-Type": "application/yaml"})
        response.raise_for_status()
        return response.json()["id"]

    def wait(self, job_id: int, states: tuple[str, ...], timeout: float = 600, metrics: bool = False) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.http.get(f"/jobs/{job_id}").json()
            if job["state"] in states and (not metrics or job.get("step")):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {job['state']}, not {states}")
            time.sleep(1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def seed(service: Service, home: Path) -> dict[str, int]:
    """The jobs the views show; returns {role: job id}."""
    (home / "data" / "empty").mkdir(parents=True)
    jobs = {"trained": service.submit(run_config("se-resnet18-tiny", steps=40, register_as="se-resnet18-tiny"))}
    jobs["search"] = service.submit(search_config(), search=True)
    jobs["failed"] = service.submit(run_config("missing-data", steps=10, root="empty"))
    service.wait(jobs["trained"], ("SUCCEEDED",))
    service.wait(jobs["search"], ("SUCCEEDED",), timeout=900)
    service.wait(jobs["failed"], ("FAILED",))
    jobs["running"] = service.submit(run_config("se-resnet18-long", steps=5000))
    jobs["queued"] = service.submit(run_config("nl-next-in-line", steps=100))
    jobs["cancelled"] = service.submit(run_config("cancelled-early", steps=100))
    service.http.post(f"/jobs/{jobs['cancelled']}/cancel").raise_for_status()
    service.wait(jobs["running"], ("RUNNING",), metrics=True)
    time.sleep(8)  # a few more steps and log lines
    return jobs


def shoot(page: Page, service: Service, jobs: dict[str, int], size: str, out: Path) -> list[Path]:
    written = []
    page.goto(service.url + "/")
    page.type("#token", TOKEN)
    page.click("#signin button")
    page.wait_for("!document.querySelector('#signed').hidden")
    time.sleep(0.5)
    written.append(page.screenshot(out / f"jobs-{size}.png"))
    for role in ("running", "search", "trained", "failed"):
        page.goto(f"{service.url}/?job={jobs[role]}")
        page.wait_for("document.querySelector('#detail-info article')")
        if role == "search":
            page.wait_for("document.querySelector('[data-role=ablation]')")
        page.wait_for("document.querySelector('#log').textContent.length > 0", timeout=30)
        time.sleep(1.5)  # the log streams in
        written.append(page.screenshot(out / f"{role}-{size}.png"))
    page.goto(service.url + "/")
    page.click("#open-submit")
    bad = yaml.safe_dump(run_config("typo", steps=10), sort_keys=False).replace("family: se", "family: squeeze")
    page.type("#config", bad.replace("batch_size: 16", "batch_size: -1"))
    page.click("#submit-button")
    page.wait_for("document.querySelector('#errors li')")
    written.append(page.screenshot(out / f"submit-errors-{size}.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    args = parser.parse_args(argv)
    from datamodules.synthetic import write_idx_dataset

    with tempfile.TemporaryDirectory(prefix="attnlab-screenshots-") as folder:
        home = Path(folder)
        write_idx_dataset(home / "data" / "tiny-fmnist", train=512, test=64)
        service = Service(home)
        try:
            jobs = seed(service, home)
            with Browser() as browser:
                for size, (width, height, mobile) in SIZES.items():
                    for path in shoot(browser.page(width, height, mobile), service, jobs, size, args.out):
                        print(path)
            service.http.post(f"/jobs/{jobs['running']}/cancel")
            service.http.post(f"/jobs/{jobs['queued']}/cancel")
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
