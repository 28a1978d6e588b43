"""/docs renders in a real headless Chromium from the service's own files (no network)."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_docs_page_renders_the_operations_offline(queue_service, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make browser` (Debian package chromium) installs it")
    service = queue_service
    page = httpx.get(f"{service.url}/docs").text
    assert "cdn" not in page.lower() and "/static/docs/swagger-ui-bundle.js" in page
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom",
         f"{service.url}/docs"], capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert "opblock-summary-path" in dom, result.stderr[-2000:]
    for path in ("/jobs/{job_id}/logs", "/searches", "/models/{name}/aliases/{alias}"):
        assert path in dom
