"""The audit log: who did what to which job, search, model or user, and when — and what was refused.

Every mutating route records one row after it acted (`outcome` "ok"), or when it refused an
authenticated caller (`outcome` "denied", with the reason). Requests without a valid token are not
recorded: they never reach an action, and a flood of them would flood the log. Rows are only ever
inserted; admins read them with `GET /audit` (`attnlab audit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from service.store import Base, UTCDateTime, utcnow
from service.users import Principal


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32), index=True)  # e.g. job.submit, job.cancel, user.revoke
    target: Mapped[str] = mapped_column(String(300))  # e.g. "job 12", "model se-resnet18", "user alice"
    outcome: Mapped[str] = mapped_column(String(16))  # ok | denied
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)  # why it was denied


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEntry]
    total: int


class AuditLog:
    def __init__(self, engine):
        Base.metadata.create_all(engine, tables=[AuditEntry.__table__])
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._insert = insert(AuditEntry)

    def record(self, who: Principal, action: str, target: str, detail: dict[str, Any] | None = None,
               *, denied: str | None = None, connection: Connection | None = None) -> None:
        """Insert one entry; in `connection`'s transaction when given (it commits with the action)."""
        values = {"at": utcnow(), "actor": who.name, "role": who.role.value, "action": action, "target": target,
                  "outcome": "denied" if denied else "ok", "detail": detail, "reason": denied}
        if connection is not None:
            connection.execute(self._insert, values)
            return
        with self.engine.begin() as connection:
            connection.execute(self._insert, values)

    def list(self, *, actor: str | None = None, action: str | None = None, limit: int = 100,
             offset: int = 0) -> AuditPage:
        """Newest first."""
        conditions = []
        if actor:
            conditions.append(AuditEntry.actor == actor)
        if action:
            conditions.append(AuditEntry.action == action)
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0
            items = session.scalars(select(AuditEntry).where(*conditions).order_by(AuditEntry.id.desc())
                                    .limit(limit).offset(offset)).all()
        return AuditPage(list(items), total)
