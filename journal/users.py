"""Dispatchers, managers and admins: argon2-hashed passwords and server-side sessions.

A session cookie holds a random token; the journal keeps only its SHA-256, the
user, the role, a CSRF token and an expiry (a TTL index removes old ones), so
several inbox processes share sessions and a stolen database leaks no cookie.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from adshub.errors import InvalidInput, NotFound
from journal.documents import UserDoc
from journal.repository import Journal

ROLES = ("dispatcher", "manager", "admin")
ROLE_NAMES = {"dispatcher": "диспетчер", "manager": "руководитель", "admin": "администратор"}
LOGIN_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
SESSION_TTL = timedelta(hours=12)
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("not-a-password")


@dataclass(frozen=True)
class User:
    login: str
    role: str
    name: str

    def can(self, permission: str) -> bool:
        """dispatcher: the inbox; manager: + reports and users; admin: everything."""
        rank = ROLES.index(self.role)
        needed = {"inbox": 0, "reports": 1, "users": 1, "staff": 1, "admin": 2}[permission]
        return rank >= needed


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    token_hash: str


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, journal: Journal) -> None:
        self.users = journal.users
        self.sessions = journal.sessions

    async def add(self, login: str, password: str, role: str, name: str | None = None) -> User:
        login = login.strip().lower()
        if not LOGIN_RE.match(login):
            raise InvalidInput("login: 2-64 characters of a-z 0-9 . _ -")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise InvalidInput("password: at least 8 characters")
        doc: UserDoc = {
            "_id": login,
            "login": login,
            "password_hash": _HASHER.hash(password),
            "role": role,
            "name": name or login,
            "disabled": False,
            "created_at": datetime.now(UTC),
        }
        try:
            await self.users.insert_one(doc)
        except DuplicateKeyError:
            raise InvalidInput(f"user {login} already exists") from None
        return User(login, role, doc["name"])

    async def list(self) -> list[UserDoc]:
        return [doc async for doc in self.users.find({}, {"password_hash": 0}).sort("login", ASCENDING)]

    async def disable(self, login: str) -> None:
        result = await self.users.update_one({"_id": login.strip().lower()}, {"$set": {"disabled": True}})
        if result.matched_count == 0:
            raise NotFound(f"no user {login}")
        await self.sessions.delete_many({"login": login.strip().lower()})

    async def authenticate(self, login: str, password: str) -> User | None:
        """The user when the password is right and the account enabled; the same work either way."""
        doc = await self.users.find_one({"_id": login.strip().lower()})
        stored = doc["password_hash"] if doc else _DUMMY_HASH
        try:
            _HASHER.verify(stored, password)
            ok = doc is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok or doc is None or doc.get("disabled"):
            return None
        if _HASHER.check_needs_rehash(stored):
            await self.users.update_one({"_id": doc["_id"]}, {"$set": {"password_hash": _HASHER.hash(password)}})
        return User(doc["login"], doc["role"], doc.get("name") or doc["login"])

    async def open_session(self, user: User, ip: str | None) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = datetime.now(UTC)
        await self.sessions.insert_one(
            {
                "_id": _hash_token(token),
                "login": user.login,
                "role": user.role,
                "name": user.name,
                "csrf": csrf,
                "created_at": now,
                "expires_at": now + SESSION_TTL,
                "ip": ip,
            }
        )
        return token, Session(user, csrf, _hash_token(token))

    async def session(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        doc = await self.sessions.find_one({"_id": _hash_token(token)})
        if doc is None or doc["expires_at"] <= datetime.now(UTC):
            return None
        user = await self.users.find_one({"_id": doc["login"]}, {"disabled": 1, "role": 1, "name": 1})
        if user is None or user.get("disabled"):
            return None
        return Session(User(doc["login"], user["role"], user.get("name") or doc["login"]), doc["csrf"], doc["_id"])

    async def close_session(self, session: Session) -> None:
        await self.sessions.delete_one({"_id": session.token_hash})
