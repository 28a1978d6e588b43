"""The web page with 1,000 jobs, and the idle footprint of `attnlab serve` (issue 17).

1. Page. A fresh home, queue only (slots=0: nothing trains), 1,000 jobs submitted through the API and
   then finished in a mix of states, reads open (ATTNLAB_OPEN_READS: `/` is rendered with the table, as
   a single-user laptop serves it; with a token the shell comes first and the same rows follow from
   `/ui/jobs`). Headless Chromium (1400x900) opens `/` several times; measured is
   the time from navigation start until the line under the table is painted (Element Timing: the
   whole 1,000-row table is on screen), with the server's share (request start -> first byte).
   Reference, same run: the API's own list of the same 1,000 jobs (GET /jobs, two pages of 500).
   Bar: paint <= 0.3 s (median of the warm loads).
2. Idle footprint. `attnlab serve` as shipped (MLflow UI on), warmed up, past the model checker's
   idle timeout, settled, nothing submitted: resident memory summed over the whole process tree, and CPU over
   60 s. Beside it, today's configuration measured the same way in the same run (MLflow's job queue
   on, the model checker kept). Bars: <= 1 GB, <= 2 % of one core.

    .venv/bin/python benchmarks/bench_web.py [--loads 7] [--cpu-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.store import JobState, JobStore  # noqa: E402
from service.web.headless import Browser  # noqa: E402

TOKEN = "bench-token"
JOBS = 1000
PAINT_BAR_S = 0.3
RSS_BAR_BYTES = 1e9
CPU_BAR_PERCENT = 2.0
SETTLE_SECONDS = 30
# The page's paint of the line under the table (service/web/templates/_rows.html, elementtiming).
PAINTED = """new Promise(resolve => {
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) if (entry.identifier === "jobs-table") resolve(entry.renderTime);
  }).observe({type: "element", buffered: true});
  setTimeout(() => resolve(null), 10000);
}).then(painted => {
  const n = performance.getEntriesByType("navigation")[0];
  return {painted, server: n.responseStart - n.requestStart, received: n.responseEnd,
          rows: document.querySelectorAll(".job-row").length};
})"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def start(home: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "ATTNLAB_HOME": str(home), "ATTNLAB_TOKEN": TOKEN, "ATTNLAB_PORT": str(port),
           "ATTNLAB_MLFLOW_UI_PORT": str(free_port()), "ATTNLAB_ACCESS_LOG": "false"}
    env.update({f"ATTNLAB_{key.upper()}": value for key, value in settings.items() if key.islower()})
    env.update({key: value for key, value in settings.items() if key.isupper()})
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, cwd=ROOT,
                               stdout=open(home / "serve.out", "ab"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited:\n{(home / 'serve.out').read_text()[-2000:]}")
        try:
            health = httpx.get(f"{url}/health", timeout=2).json()
            if health["warmed_up"] and (health["mlflow_ui"] is None or health["mlflow_ui_ready"]):
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("serve did not start in 180 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---- the page ------------------------------------------------------------------------------------


def seed(url: str, home: Path) -> None:
    """1,000 jobs through the API, then a realistic mix of finished states (the table's worst case
    is every row different)."""
    config = {"data": {"kind": "image", "dataset": "fashion_mnist", "batch_size": 64},
              "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-all", "reduction": 16},
              "tracking": {"experiment": "bench-web", "register_as": "bench-se"}}

    async def submit_all() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=120) as client:
            queue = iter(range(JOBS))

            async def worker() -> None:
                for index in queue:
                    body = {"config": {**config, "name": f"se-resnet18-ablation-{index:04d}"}}
                    (await client.post("/jobs", json=body)).raise_for_status()

            await asyncio.gather(*(worker() for _ in range(8)))

    asyncio.run(submit_all())
    store = JobStore(f"sqlite:///{home / 'jobs.db'}")
    for job_id in range(1, JOBS + 1):
        if job_id % 10 < 6:
            store.finish(job_id, JobState.SUCCEEDED)
        elif job_id % 10 < 7:
            store.finish(job_id, JobState.FAILED, "RuntimeError: out of memory")
        elif job_id % 10 < 8:
            store.finish(job_id, JobState.CANCELLED, "cancelled while running")
    store.close()


def api_list_seconds(url: str) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        items = []
        for offset in (0, 500):
            items += client.get("/jobs", params={"limit": 500, "offset": offset}).json()["items"]
    assert len(items) == JOBS
    return time.perf_counter() - started


def measure_page(loads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-web-") as folder:
        home = Path(folder)
        process, url = start(home, slots="0", mlflow_ui="false", open_reads="true")
        try:
            seed(url, home)
            cpu = cpu_seconds(process.pid)
            api = [api_list_seconds(url) for _ in range(loads)]
            api_cpu = (cpu_seconds(process.pid) - cpu) / loads
            with Browser() as browser:
                page = browser.page(1400, 900)
                results = []
                for _ in range(loads):
                    cpu, browser_cpu = cpu_seconds(process.pid), tree_cpu_seconds(browser.pid)
                    page.goto(url + "/")
                    results.append({**page.evaluate(PAINTED), "server_cpu": cpu_seconds(process.pid) - cpu,
                                    "browser_cpu": tree_cpu_seconds(browser.pid) - browser_cpu})
        finally:
            stop(process)
    assert all(r["rows"] == JOBS and r["painted"] for r in results), results
    warm = results[1:]
    return {"cold": results[0]["painted"] / 1000, "paint": statistics.median(r["painted"] for r in warm) / 1000,
            "server": statistics.median(r["server"] for r in warm) / 1000,
            "received": statistics.median(r["received"] for r in warm) / 1000,
            "api": statistics.median(api[1:]), "api_cpu": api_cpu,
            "server_cpu": statistics.median(r["server_cpu"] for r in warm),
            "browser_cpu": statistics.median(r["browser_cpu"] for r in warm)}


# ---- the idle footprint --------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(member) for member in process_tree(pid))


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def measure_idle(cpu_window: float, **settings: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-idle-") as folder:
        process, _ = start(Path(folder), slots="1", **settings)
        try:
            idle = float(settings.get("model_checker_idle_seconds", 60))
            if idle > 0:  # past the checker's idle timeout: what an idle service holds
                deadline = time.monotonic() + idle + 30
                while any("service.model_checker" in command(p) for p in process_tree(process.pid)):
                    if time.monotonic() > deadline:
                        raise SystemExit("the model checker did not exit when idle")
                    time.sleep(1)
            time.sleep(SETTLE_SECONDS)  # let processes started at boot (MLflow's job queue) finish starting
            pids = process_tree(process.pid)
            memory = {pid: rss_bytes(pid) for pid in pids}
            names = {pid: command(pid) for pid in pids}
            before = {pid: cpu_seconds(pid) for pid in pids}
            time.sleep(cpu_window)
            used = sum(cpu_seconds(pid) - before[pid] for pid in pids if Path(f"/proc/{pid}").exists())
        finally:
            stop(process)
    return {"processes": len(pids), "rss": sum(memory.values()), "api_rss": memory[process.pid],
            "cpu": 100 * used / cpu_window,
            "largest": sorted(((rss, names[pid]) for pid, rss in memory.items()), reverse=True)[:3]}


def _short(command_line: str) -> str:
    """`python -m service.model_checker` -> service.model_checker; `... attnlab serve` -> attnlab serve."""
    words = command_line.split()
    if "-m" in words:
        return " ".join(words[words.index("-m") + 1:][:2])
    return " ".join(word.rsplit("/", 1)[-1] for word in words[1:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=7, help="page loads (the first, cold, is not in the median)")
    parser.add_argument("--cpu-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=["page", "idle"], help="run one half (its bars only)")
    args = parser.parse_args()

    print(f"attnlab web page and idle footprint; {cpu_model()}, {os.cpu_count()} cpus, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    checks = []
    if args.only != "idle":
        checks.append(report_page(measure_page(args.loads), args.loads))
    if args.only != "page":
        checks += report_idle(args.cpu_seconds)
    for passed, line in checks:
        print(f"{'PASS' if passed else 'FAIL'}: {line}")
    return 0 if all(passed for passed, _ in checks) else 1


def report_page(page: dict, loads: int) -> tuple[bool, str]:
    print(f"page: {JOBS} jobs in the table, 1400x900, median of {loads - 1} warm loads")
    print(f"  table painted {page['paint'] * 1000:.0f} ms after navigation (cold first load "
          f"{page['cold'] * 1000:.0f} ms); server render to first byte {page['server'] * 1000:.0f} ms, "
          f"HTML received {page['received'] * 1000:.0f} ms")
    print(f"  reference: the API's own list of the {JOBS} jobs {page['api'] * 1000:.0f} ms -> page/API "
          f"{page['paint'] / page['api']:.2f}x")
    print(f"  CPU per load (what it costs whatever the machine's load): server {page['server_cpu'] * 1000:.0f} ms "
          f"(the API's list alone {page['api_cpu'] * 1000:.0f} ms), Chromium {page['browser_cpu'] * 1000:.0f} ms")
    return page["paint"] <= PAINT_BAR_S, f"table painted {page['paint']:.3f} s (bar <= {PAINT_BAR_S} s)"


def report_idle(cpu_seconds: float) -> list[tuple[bool, str]]:
    today = measure_idle(cpu_seconds, model_checker_idle_seconds="0", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true")
    idle = measure_idle(cpu_seconds)
    print(f"idle service (API + MLflow UI, nothing submitted), CPU over {cpu_seconds:.0f} s:")
    for label, figures in (("before (MLflow job queue on, model checker kept)", today), ("now", idle)):
        largest = ", ".join(f"{rss / 2**20:.0f} MiB {_short(name)}" for rss, name in figures["largest"])
        print(f"  {label}: {figures['processes']} processes, RSS {figures['rss'] / 1e9:.2f} GB "
              f"(API process {figures['api_rss'] / 1e9:.2f} GB), CPU {figures['cpu']:.2f} % of one core; "
              f"largest: {largest}")
    print(f"  now/before: memory {idle['rss'] / today['rss']:.2f}x, CPU {idle['cpu'] / max(today['cpu'], 1e-9):.2f}x")
    return [(idle["rss"] <= RSS_BAR_BYTES, f"idle RSS {idle['rss'] / 1e9:.2f} GB (bar <= 1 GB)"),
            (idle["cpu"] <= CPU_BAR_PERCENT, f"idle CPU {idle['cpu']:.2f} % (bar <= {CPU_BAR_PERCENT} %)")]


if __name__ == "__main__":
    sys.exit(main())
