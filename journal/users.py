"""Dispatchers, managers and admins: argon2-hashed passwords, server-side sessions, and who may
manage whom.

A session cookie holds a random token; the journal keeps only its SHA-256, the
user, the role, a CSRF token and an expiry (a TTL index removes old ones), so
several inbox processes share sessions and a stolen database leaks no cookie.

Roles are a hierarchy (dispatcher < manager < admin): nobody acts on a user of a
higher role than their own or grants a higher role, and the last active admin
cannot be disabled or demoted. Every change to a user, and every refused
attempt, is kept in ``user_events``; failed logins in ``login_failures``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from adshub.errors import Forbidden, InvalidInput, NotFound
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


CONSOLE = "console"
"""Who acts through ``adshub user …`` on the server itself: trusted like an admin, and audited."""
ACTION_NAMES = {
    "add": "добавил(а)",
    "disable": "отключил(а)",
    "enable": "включил(а)",
    "role": "сменил(а) роль",
    "refused": "отказано",
}


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


class Users:
    def __init__(self, journal: Journal) -> None:
        self.users = journal.users
        self.sessions = journal.sessions
        self.events = journal.user_events
        self.failures = journal.login_failures

    # -- who may do what ------------------------------------------------------------------

    async def _target(self, login: str) -> UserDoc:
        doc = await self.users.find_one({"_id": login.strip().lower()})
        if doc is None:
            raise NotFound(f"no user {login}")
        return doc

    async def _check(self, actor: User | None, target_role: str, new_role: str | None, action: str, login: str) -> None:
        """Refuse (and record) an action on a user of a higher role, or a grant above the actor's own."""
        if actor is None:
            return
        too_high = rank(target_role) > rank(actor.role) or (new_role is not None and rank(new_role) > rank(actor.role))
        if too_high:
            await self.record(actor.login, login, "refused", {"wanted": action, "role": new_role or target_role})
            raise Forbidden("Нельзя менять пользователя с более высокой ролью или выдавать такую роль")

    async def _keep_an_admin(self, target: UserDoc) -> None:
        if target.get("role") != "admin" or target.get("disabled"):
            return
        others = await self.users.count_documents(
            {"role": "admin", "disabled": {"$ne": True}, "_id": {"$ne": target["_id"]}}
        )
        if others == 0:
            raise InvalidInput("Это последний активный администратор: его нельзя отключить или понизить")

    async def record(self, actor: str, target: str, action: str, changes: dict[str, Any]) -> None:
        await self.events.insert_one(
            {"at": datetime.now(UTC), "actor": actor, "target": target, "action": action, "changes": changes}
        )

    async def recent_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return [e async for e in self.events.find({}, {"_id": 0}).sort("at", -1).limit(limit)]

    async def record_failed_login(self, login: str, ip: str) -> None:
        """A wrong password (or an unknown or disabled login): kept 30 days for admins to see."""
        await self.failures.insert_one({"at": datetime.now(UTC), "login": login[:64], "ip": ip[:64]})

    async def recent_failed_logins(self, limit: int = 100) -> list[dict[str, Any]]:
        return [f async for f in self.failures.find({}, {"_id": 0}).sort("at", -1).limit(limit)]

    # -- changes --------------------------------------------------------------------------

    async def add(self, login: str, password: str, role: str, name: str | None = None, by: User | None = None) -> User:
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
        await self._check(by, role, role, "add", login)
        try:
            await self.users.insert_one(doc)
        except DuplicateKeyError:
            raise InvalidInput(f"user {login} already exists") from None
        await self.record(by.login if by else CONSOLE, login, "add", {"role": role})
        return User(login, role, doc["name"])

    async def get(self, login: str) -> User | None:
        """An active user by login."""
        doc = await self.users.find_one({"_id": login.strip().lower()[:64]})
        if doc is None or doc.get("disabled"):
            return None
        return User(doc["login"], doc["role"], doc.get("name") or doc["login"])

    async def list(self) -> list[UserDoc]:
        return [doc async for doc in self.users.find({}, {"password_hash": 0}).sort("login", ASCENDING)]

    async def disable(self, login: str, by: User | None = None) -> None:
        """Disable a user and end their sessions."""
        target = await self._target(login)
        await self._check(by, target.get("role", ""), None, "disable", target["_id"])
        await self._keep_an_admin(target)
        await self.users.update_one({"_id": target["_id"]}, {"$set": {"disabled": True}})
        await self.sessions.delete_many({"login": target["_id"]})
        await self.record(by.login if by else CONSOLE, target["_id"], "disable", {})

    async def enable(self, login: str, by: User | None = None) -> None:
        target = await self._target(login)
        await self._check(by, target.get("role", ""), None, "enable", target["_id"])
        await self.users.update_one({"_id": target["_id"]}, {"$set": {"disabled": False}})
        await self.record(by.login if by else CONSOLE, target["_id"], "enable", {})

    async def set_role(self, login: str, role: str, by: User | None = None) -> None:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        target = await self._target(login)
        await self._check(by, target.get("role", ""), role, "role", target["_id"])
        if role != "admin":
            await self._keep_an_admin(target)
        await self.users.update_one({"_id": target["_id"]}, {"$set": {"role": role}})
        await self.sessions.update_many({"login": target["_id"]}, {"$set": {"role": role}})
        await self.record(by.login if by else CONSOLE, target["_id"], "role", {"role": [target.get("role"), role]})

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
