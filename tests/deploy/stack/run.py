"""`make test-stack`: build the images, bring the compose stack up, train through it, tear it down.

    python3 -m tests.deploy.stack.run        (from the repository root; as root on Debian, or
                                             with a running Docker engine)

Steps, each named in the failure message: engine, image build, health, job, restart, MLflow, S3,
teardown. Whatever happens, everything the test created is removed at the end (containers,
networks, volumes, the images it built or pulled, and the engine's data root if it started the
engine), then the image sizes and step times are printed. Only the standard library: it runs
before (and without) the project's virtual environment. docs/deployment.md lists the same commands.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from .checks import check_job, check_mlflow, check_nothing_lost, check_s3, restart_service
from .common import StepFailed
from .engine import Engine, ensure_engine, stop_engine
from .images import DOCKER, Images, build_all, remove
from .stack import Stack, down, status_report, up, write_env

TAG = "0.1.0-stacktest"
PROJECT = "attnlab-stacktest"
# Free disk the build needs: the CPU image with PyPI's CUDA torch is ~7 GB, plus the wheels pip
# downloads while installing it; vfs stores a full copy per layer.
NEEDED_GB = {"overlay2": 20, "vfs": 60}
timings: dict[str, float] = {}


@contextmanager
def step(name: str):
    print(f"\n== stack test: {name}", flush=True)
    started = time.monotonic()
    try:
        yield
    except StepFailed as error:
        raise StepFailed(f"stack test FAILED at step '{name}': {error}") from None
    except Exception as error:  # an unexpected error still names its step
        traceback.print_exc()
        raise StepFailed(f"stack test FAILED at step '{name}': {type(error).__name__}: {error}") from None
    finally:
        timings[name] = time.monotonic() - started


def check_disk(engine: Engine) -> None:
    path = engine.data_root if engine.data_root.exists() else engine.data_root.parent
    free_gb = shutil.disk_usage(path).free / 1e9
    needed = NEEDED_GB.get(engine.storage_driver, NEEDED_GB["overlay2"])
    if free_gb < needed:
        raise StepFailed(f"{free_gb:.0f} GB free under {path}, the {engine.storage_driver} build needs ~{needed} GB")
    print(f"{free_gb:.0f} GB free under {path} (storage driver {engine.storage_driver})")


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt  # a CI timeout's SIGTERM still tears the stack down


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="attnlab-stack-"))
    engine: Engine | None = None
    images: Images | None = None
    stack: Stack | None = None
    sizes: dict[str, int] = {}
    build_values: dict[str, str] = {}
    failure: str | None = None
    try:
        with step("engine"):
            engine = ensure_engine()
            check_disk(engine)
        with step("image build"):
            images = Images(TAG, engine)
            build_values = build_all(images, workdir)
            sizes = {name: images.size(name) for name in images.built}
        with step("health"):
            values = write_env(workdir, TAG, build_values)
            stack = Stack(engine, PROJECT, workdir / "stack.env", [DOCKER / "compose.yaml", *images.overrides], values)
            up(stack)
        with step("job"):
            job_id, submission_id, training = check_job(stack)
        with step("restart"):
            before, log_before = restart_service(stack, job_id, submission_id)
            final = check_nothing_lost(stack, job_id, before, log_before, submission_id)
        with step("MLflow"):
            run_info = check_mlflow(stack, final["mlflow_run_id"])
        with step("S3"):
            check_s3(stack, run_info)
    except StepFailed as error:
        failure = str(error)
        if stack is not None:
            print(status_report(stack))
    except KeyboardInterrupt:
        failure = "stack test interrupted"
    finally:
        failure = teardown(engine, images, stack, workdir) or failure
    report(sizes, build_values.get("TORCH_INDEX_URL"), time.monotonic() - started)
    if failure:
        print(f"\n{failure}", file=sys.stderr)
        return 1
    print(f"\nstack test passed in {time.monotonic() - started:.0f} s")
    return 0


def teardown(engine: Engine | None, images: Images | None, stack: Stack | None, workdir: Path) -> str | None:
    """Remove everything this run created; returns a failure message if something stays behind.

    An engine started here goes with its whole data root (containers, volumes, images, build cache
    at once); on an engine that was already running, only what this run made is removed."""
    left: list[str] = []
    try:
        with step("teardown"):
            if engine is not None and engine.started_here:
                left += stop_engine(engine)
            elif engine is not None:
                if stack is not None:
                    left += [f"volume {name}" for name in down(stack)]
                if images is not None:
                    left += [f"image {name}" for name in remove(images)]
                    # The builds' cache records hold the removed images' layers: drop the unused ones.
                    subprocess.run([engine.docker, "builder", "prune", "-f"], capture_output=True, env=engine.env)
            shutil.rmtree(workdir, ignore_errors=True)
            if left:
                raise StepFailed(f"left behind: {', '.join(left)}")
    except StepFailed as error:
        return str(error)
    return None


def report(sizes: dict[str, int], torch_index: str | None, total: float) -> None:
    if sizes:
        print(f"\nimage sizes (torch from {torch_index}):")
        for name, size in sizes.items():
            print(f"  {name:<45} {size / 1e9:6.2f} GB")
    print("step times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
          + f"; total {total:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
