"""The service's one Settings object, read from ATTNLAB_* environment variables (and a .env file).

docker/compose.yaml sets these same names; keep both in step. Paths default under ATTNLAB_HOME,
the folder training.tracking.attnlab_home() also uses, so the embedded setup needs no settings at all.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of `attnlab serve` and of the `attnlab jobs` client."""

    model_config = SettingsConfigDict(env_prefix="ATTNLAB_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=lambda: Path("~/.attnlab"), description="state folder (ATTNLAB_HOME)")
    # Job table; any SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@db/attnlab. None = SQLite in home.
    database_url: str | None = None
    # The service token: the bootstrap admin's (service/users.py). None = generated once and kept in
    # <home>/token (mode 0600), which the `attnlab` client on this machine reads by itself.
    token: SecretStr | None = None
    # Read routes (jobs, logs, models) answer without a token, as the viewer "anonymous": for a
    # single-user laptop. Changing anything still needs a token.
    open_reads: bool = False
    # Queued jobs one `user` may have at once (admins are not bounded), so no one floods the queue.
    max_queued_per_user: int = Field(default=20, ge=1)
    # Dataset paths in job configs must resolve inside one of these. Env: JSON list or os.pathsep-separated.
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Output/checkpoint paths in job configs must resolve inside this. None = <home>/outputs.
    output_root: Path | None = None
    slots: int = Field(default=1, ge=0, description="jobs running at once; 0 = queue only (paused)")
    max_attempts: int = Field(default=3, ge=1, description="launches per job before a lost job is FAILED")
    poll_interval: float = Field(default=1.0, gt=0, description="seconds between supervisor passes")
    ray_address: str | None = None  # e.g. http://ray-head:8265; set = jobs run as Ray Jobs
    ray_token: SecretStr | None = None  # token for a Ray cluster started with token auth
    mlflow_tracking_uri: str | None = None  # None = sqlite:///<home>/mlflow.db, and `serve` starts its UI
    mlflow_ui_port: int = 5000
    # The MLflow UI has no login of its own: it listens on loopback unless this says otherwise (put an
    # authenticating proxy in front before widening it; docs/deployment.md).
    mlflow_ui_host: str = "127.0.0.1"
    mlflow_ui: bool = True  # start `mlflow server` on the embedded store
    host: str = "127.0.0.1"
    port: int = 8000
    url: str | None = None  # where the `attnlab jobs` client finds the service; None = http://host:port
    max_request_bytes: int = Field(default=1_000_000, gt=0)
    access_log: bool = True  # uvicorn's line per request
    # The config checker (a helper process with torch, ~650 MB) exits after this many idle seconds and
    # starts again on the next submission (a few seconds); 0 = keep it running.
    model_checker_idle_seconds: float = Field(default=60.0, ge=0)

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part]
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'jobs.db'}"
        if not self.data_roots:
            self.data_roots = [self.home / "data", Path("/usr/share/datasets")]
        self.data_roots = [Path(root).expanduser().resolve() for root in self.data_roots]
        self.output_root = (self.output_root or self.home / "outputs").expanduser().resolve()
        return self

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def tracking_uri(self) -> str:
        """The MLflow store jobs log to; the same default as training.tracking.default_tracking_uri()."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def embedded_tracking(self) -> bool:
        return self.mlflow_tracking_uri is None

    @property
    def service_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return (self.url or f"http://{host}:{self.port}").rstrip("/")

    def bearer_token(self) -> str:
        """The configured token, else the one kept in <home>/token (created on first use)."""
        if self.token is not None:
            return self.token.get_secret_value()
        path = self.home / "token"
        if not path.exists():
            import secrets

            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    """The process's settings (a FastAPI dependency; tests override it)."""
    return Settings()
