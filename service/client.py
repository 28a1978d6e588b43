"""A small HTTP client of the service, used by `attnlab jobs ...` (and handy in scripts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx


class ServiceError(RuntimeError):
    """The service answered with an error; the message is the service's own (it names the field)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.ConnectError as error:
            raise ServiceError(0, f"cannot reach the service at {self.url} ({error}); is `attnlab serve` "
                                  "running, and ATTNLAB_URL right?") from None
        if response.status_code >= 400:
            raise ServiceError(response.status_code, _message(response))
        return response.json()

    def submit(self, config: dict[str, Any], *, search: bool = False, idempotency_key: str | None = None) -> dict:
        body = {"config": config, "idempotency_key": idempotency_key}
        return self._call("POST", "/searches" if search else "/jobs", json=body)

    def jobs(self, **filters: Any) -> dict:
        return self._call("GET", "/jobs", params={k: v for k, v in filters.items() if v is not None})

    def job(self, job_id: int) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: int) -> dict:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def models(self) -> list[dict]:
        return self._call("GET", "/models")

    def model(self, name: str) -> dict:
        return self._call("GET", f"/models/{name}")

    def set_alias(self, name: str, alias: str, version: str) -> dict:
        return self._call("PUT", f"/models/{name}/aliases/{alias}", json={"version": version})

    def me(self) -> dict:
        return self._call("GET", "/users/me")

    def users(self) -> list[dict]:
        return self._call("GET", "/users")

    def create_user(self, name: str, role: str = "user") -> dict:
        return self._call("POST", "/users", json={"name": name, "role": role})

    def issue_token(self, name: str) -> dict:
        return self._call("POST", f"/users/{name}/token")

    def revoke_user(self, name: str) -> dict:
        return self._call("POST", f"/users/{name}/revoke")

    def audit(self, **filters: Any) -> dict:
        return self._call("GET", "/audit", params={k: v for k, v in filters.items() if v is not None})

    def health(self) -> dict:
        return self._call("GET", "/health")

    def logs(self, job_id: int, *, follow: bool = False, offset: int = 0) -> Iterator[bytes]:
        """The job's log bytes; with follow, until the job ends."""
        params = {"follow": str(follow).lower(), "offset": offset}
        try:
            with self._http.stream("GET", f"/jobs/{job_id}/logs", params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServiceError(response.status_code, _message(response))
                yield from response.iter_bytes()
        except httpx.ConnectError as error:
            raise ServiceError(0, f"cannot reach the service at {self.url} ({error})") from None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail"))
    return str(body)
