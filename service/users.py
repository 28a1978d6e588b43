"""Users of the service, their roles and their tokens (kept as SHA-256 digests, never in clear).

Roles, from least to most:
- `viewer`: reads every job, log and model; changes nothing.
- `user`: submits jobs and searches, and reads, follows and cancels only its own; moves model aliases.
- `admin`: everything, including other users' jobs, the users themselves and the audit log.

The service's own token (ATTNLAB_TOKEN, else the one generated into $ATTNLAB_HOME/token) is the
bootstrap admin, named `admin`: a fresh install needs no configuration, and that token creates the
others (`attnlab users create NAME --role user`). A user token is shown once, when it is made; the
table keeps its SHA-256 digest (a random 256-bit token needs no slow hash: nothing to brute-force),
so a copy of the database does not let anyone in. Revoking keeps the row (and the user's jobs),
and refuses the token from then on.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from service.store import DEFAULT_OWNER, Base, UTCDateTime, utcnow

TOKEN_PREFIX = "atl_"
BOOTSTRAP_ADMIN = DEFAULT_OWNER
USER_NAME_PATTERN = r"^[a-z][a-z0-9._-]{0,63}$"


class Role(str, enum.Enum):
    VIEWER = "viewer"
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user name and its role."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def reads_everything(self) -> bool:
        """Admins and viewers see every job; users see their own."""
        return self.role in (Role.ADMIN, Role.VIEWER)

    @property
    def may_write(self) -> bool:
        return self.role in (Role.ADMIN, Role.USER)

    def owns(self, owner: str | None) -> bool:
        return (owner or BOOTSTRAP_ADMIN) == self.name


class User(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    token_issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserExists(ValueError):
    """The name is taken."""


class UnknownUser(LookupError):
    """No such user."""


class TokenRefused(PermissionError):
    """A bearer token that names no active user; the message says why."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class UserStore:
    """The users table (in the job table's database); thread-safe, one short session per call."""

    def __init__(self, engine):
        Base.metadata.create_all(engine, tables=[User.__table__])
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(self, name: str, role: Role, created_by: str) -> tuple[User, str]:
        """A new user and its token (the only time the token exists in clear)."""
        if name == BOOTSTRAP_ADMIN:
            raise UserExists(f"{BOOTSTRAP_ADMIN!r} is the service token's name; choose another")
        token = new_token()
        user = User(name=name, role=role.value, token_sha256=digest(token), created_at=utcnow(),
                    created_by=created_by, token_issued_at=utcnow())
        try:
            with self._sessions.begin() as session:
                session.add(user)
        except IntegrityError:
            raise UserExists(f"user {name!r} exists; `attnlab users token {name}` gives it a new token") from None
        return user, token

    def issue_token(self, name: str) -> tuple[User, str]:
        """A new token for an existing user (re-activating a revoked one); the old token stops working."""
        token = new_token()
        with self._sessions.begin() as session:
            changed = session.execute(update(User).where(User.name == name).values(
                token_sha256=digest(token), token_issued_at=utcnow(), revoked_at=None)).rowcount
        if not changed:
            raise UnknownUser(f"no user {name!r}")
        return self.get(name), token

    def revoke(self, name: str) -> User:
        with self._sessions.begin() as session:
            changed = session.execute(update(User).where(User.name == name, User.revoked_at.is_(None))
                                      .values(revoked_at=utcnow())).rowcount
        user = self.get(name)
        if user is None:
            raise UnknownUser(f"no user {name!r}")
        if not changed and user.revoked_at is None:
            raise UnknownUser(f"user {name!r} could not be revoked")
        return user

    def get(self, name: str) -> User | None:
        with self._sessions() as session:
            return session.get(User, name)

    def list(self) -> list[User]:
        with self._sessions() as session:
            return list(session.scalars(select(User).order_by(User.name)).all())

    def authenticate(self, token: str) -> Principal:
        """The active user holding `token`; TokenRefused otherwise."""
        with self._sessions() as session:
            user = session.scalars(select(User).where(User.token_sha256 == digest(token))).first()
        if user is None:
            raise TokenRefused("unknown bearer token")
        if user.revoked_at is not None:
            raise TokenRefused(f"the token of user {user.name!r} was revoked at {user.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
        return Principal(user.name, Role(user.role))
