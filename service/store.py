"""The job table: one row per submitted training or search, in SQLite by default, Postgres by URL.

States move QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, and every move is a conditional
UPDATE (`... WHERE state = <expected>`), so the supervisor thread and the API routes never
overwrite each other's decisions. Submissions carry an optional idempotency key: the same key
returns the job it first created (and a different body under that key is a conflict).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobKind(str, enum.Enum):
    TRAIN = "train"
    SEARCH = "search"
    DATA_CHECK = "data_check"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone on the way in)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(128), index=True)  # the run name (config.name)
    state: Mapped[str] = mapped_column(String(16), index=True, default=JobState.QUEUED.value)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # validated, paths resolved
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # detects a reused key with another body
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    runner: Mapped[str | None] = mapped_column(String(32))
    handle: Mapped[str | None] = mapped_column(Text)  # the runner's handle of the current attempt
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str | None] = mapped_column(Text)  # why it failed or was cancelled
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    registered_model: Mapped[str | None] = mapped_column(String(256))
    model_version: Mapped[str | None] = mapped_column(String(32))


@dataclass(frozen=True)
class JobPage:
    items: list[Job]
    total: int


class IdempotencyConflict(Exception):
    """The idempotency key was first used with a different request body."""


def request_hash(kind: str, config: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_engine(url: str):
    """An engine for `url`; SQLite gets WAL and a busy timeout so many writers queue, not fail."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # No checkpoint inside a commit: it fsyncs the WAL and the database on the thread that
            # committed — the event loop, for submissions. The supervisor checkpoints every pass.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class JobStore:
    """All reads and writes of the job table. Thread-safe: one short session per call."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._insert = insert(Job)

    def close(self) -> None:
        self.engine.dispose()

    def checkpoint(self) -> None:
        """Copy the SQLite write-ahead log into the database (fsyncs included) from the calling thread,
        without blocking writers; a no-op on other databases."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    # ---- submission -------------------------------------------------------------------------

    def submit(self, kind: JobKind, name: str, config: dict[str, Any],
               idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Queue a job; returns (job, created). A known key returns its job with created=False."""
        digest = request_hash(kind.value, config)
        values = {"kind": kind.value, "name": name, "config": config, "idempotency_key": idempotency_key,
                  "request_hash": digest, "state": JobState.QUEUED.value, "created_at": utcnow(),
                  "attempts": 0, "cancel_requested": False}
        try:
            # One Core INSERT of a prebuilt statement (no ORM unit of work, no per-call cache key over
            # the values): submissions are the hot path under load.
            with self.engine.begin() as connection:
                job_id = connection.execute(self._insert, values).inserted_primary_key[0]
        except IntegrityError:
            # The key is known (or two requests with one key raced and the other insert won).
            existing = self._by_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return self._check_same(existing, digest), False
        return Job(id=job_id, **values), True

    def _by_key(self, key: str) -> Job | None:
        with self._sessions() as session:
            return session.scalars(select(Job).where(Job.idempotency_key == key)).first()

    @staticmethod
    def _check_same(job: Job, digest: str) -> Job:
        if job.request_hash != digest:
            raise IdempotencyConflict(
                f"idempotency_key was already used for job {job.id} with a different config")
        return job

    # ---- reads ------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with self._sessions() as session:
            return session.get(Job, job_id)

    def list(self, *, state: JobState | None = None, kind: JobKind | None = None,
             name: str | None = None, limit: int = 50, offset: int = 0) -> JobPage:
        """Newest first, filtered; `name` matches a prefix of the run name."""
        conditions = []
        if state is not None:
            conditions.append(Job.state == state.value)
        if kind is not None:
            conditions.append(Job.kind == kind.value)
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(Job.name.like(f"{escaped}%", escape="\\"))
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
            items = session.scalars(select(Job).where(*conditions).order_by(Job.id.desc())
                                    .limit(limit).offset(offset)).all()
        return JobPage(items=list(items), total=total)

    def in_state(self, state: JobState, limit: int | None = None) -> list[Job]:
        """Oldest first: the queue order."""
        with self._sessions() as session:
            query = select(Job).where(Job.state == state.value).order_by(Job.id)
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query).all())

    def count(self, state: JobState) -> int:
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(Job).where(Job.state == state.value)) or 0

    # ---- transitions ------------------------------------------------------------------------

    def _update(self, job_id: int, expected: tuple[JobState, ...], **values: Any) -> bool:
        """Set `values` if the job is still in one of `expected`; True when it was."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(Job).where(Job.id == job_id, Job.state.in_([s.value for s in expected]))
                .values(**values))
            return result.rowcount == 1

    def mark_running(self, job_id: int, runner: str) -> bool:
        """QUEUED -> RUNNING, before the first launch (a crash then leaves it RUNNING without handle)."""
        return self._update(job_id, (JobState.QUEUED,), state=JobState.RUNNING.value,
                            started_at=utcnow(), runner=runner, handle=None)

    def record_attempt(self, job_id: int, attempt: int, handle: str) -> bool:
        return self._update(job_id, (JobState.RUNNING,), attempts=attempt, handle=handle)

    def finish(self, job_id: int, state: JobState, message: str | None = None) -> bool:
        values: dict[str, Any] = {"state": state.value, "finished_at": utcnow()}
        if message is not None:
            values["message"] = message
        return self._update(job_id, (JobState.QUEUED, JobState.RUNNING), **values)

    def request_cancel(self, job_id: int) -> Job | None:
        """A queued job is cancelled at once; a running one is flagged for the supervisor."""
        if self._update(job_id, (JobState.QUEUED,), state=JobState.CANCELLED.value, finished_at=utcnow(),
                        message="cancelled before it started"):
            return self.get(job_id)
        self._update(job_id, (JobState.RUNNING,), cancel_requested=True)
        return self.get(job_id)

    def set_tracking(self, job_id: int, *, run_id: str | None = None, registered_model: str | None = None,
                     model_version: str | None = None) -> None:
        values = {key: value for key, value in (("mlflow_run_id", run_id), ("registered_model", registered_model),
                                                ("model_version", model_version)) if value is not None}
        if values:
            with self._sessions.begin() as session:
                session.execute(update(Job).where(Job.id == job_id).values(**values))
