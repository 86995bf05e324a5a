"""An in-process stand-in for PyMongo's async client, over mongomock, for machines without a MongoDB server.

It offers only the calls the MongoStore makes, awaitable like the real ones. Transactions are emulated by
snapshotting the database at start and restoring it on abort, so atomicity can be tested; a real replica set
(CARELOOP_TEST_MONGODB_URL) is what proves the adapter against MongoDB itself. `StandInClient.fail` makes chosen
calls raise PyMongo's own errors (a step-down, a lost connection, a transient transaction error), so the store's
handling of them can be tested here.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mongomock


class _Cursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def sort(self, key: Any, direction: int | None = None) -> _Cursor:
        self._cursor = self._cursor.sort(key, direction) if direction is not None else self._cursor.sort(key)
        return self

    def skip(self, n: int) -> _Cursor:
        self._cursor = self._cursor.skip(n)
        return self

    def limit(self, n: int) -> _Cursor:
        self._cursor = self._cursor.limit(n)
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        return list(self._cursor)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async def gen() -> AsyncIterator[dict[str, Any]]:
            for doc in self._cursor:
                yield doc
        return gen()


@dataclass
class Fault:
    """`error` raised by the next `times` calls (None: every call) of `op` on `collection` of database `db`, once
    `after` matching calls went through; "*" matches any; op "commit" is a session's commit_transaction."""

    error: Exception
    op: str = "*"
    collection: str = "*"
    db: str = "careloop"
    times: int | None = 1
    after: int = 0


class _Collection:
    def __init__(self, collection: Any, client: StandInClient | None = None, db: str = "") -> None:
        self._c = collection
        self._client = client
        self._db = db

    def __getattribute__(self, name: str) -> Any:
        found = object.__getattribute__(self, name)
        client = object.__getattribute__(self, "_client")
        if client is not None and not name.startswith("_") and callable(found):
            client.trip(object.__getattribute__(self, "_db"), object.__getattribute__(self, "_c").name, name)
        return found

    async def find_one(self, filter: Any, projection: Any = None, session: Any = None) -> Any:
        return self._c.find_one(filter, projection)

    def find(self, filter: Any, projection: Any = None, session: Any = None) -> _Cursor:
        return _Cursor(self._c.find(filter, projection))

    async def insert_one(self, doc: Any, session: Any = None) -> Any:
        return self._c.insert_one(doc)

    async def replace_one(self, filter: Any, doc: Any, upsert: bool = False, session: Any = None) -> Any:
        return self._c.replace_one(filter, doc, upsert=upsert)

    async def delete_many(self, filter: Any, session: Any = None) -> Any:
        return self._c.delete_many(filter)

    async def update_one(self, filter: Any, update: Any, upsert: bool = False, session: Any = None) -> Any:
        return self._c.update_one(filter, update, upsert=upsert)

    async def count_documents(self, filter: Any, session: Any = None) -> int:
        return int(self._c.count_documents(filter))

    async def find_one_and_update(self, filter: Any, update: Any, upsert: bool = False, return_document: Any = None,
                                  session: Any = None) -> Any:
        return self._c.find_one_and_update(filter, update, upsert=upsert, return_document=return_document)

    async def distinct(self, key: str, filter: Any = None, session: Any = None) -> list[Any]:
        return list(self._c.distinct(key, filter))

    async def create_index(self, keys: Any) -> Any:
        return self._c.create_index(keys)

    async def index_information(self) -> dict[str, Any]:
        return dict(self._c.index_information())

    async def aggregate(self, pipeline: Any, session: Any = None) -> _Cursor:
        return _Cursor(iter(self._c.aggregate(pipeline)))


class _Database:
    def __init__(self, db: Any, client: StandInClient | None = None) -> None:
        self._db = db
        self._client = client

    def __getattr__(self, name: str) -> _Collection:
        return _Collection(self._db[name], self._client, self._db.name)

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._db[name], self._client, self._db.name)


class _Admin:
    async def command(self, name: str) -> dict[str, Any]:
        return {"ok": 1} if name == "ping" else {"ok": 1, "setName": "standin", "isWritablePrimary": True}


class _Transaction:
    def __init__(self, client: StandInClient) -> None:
        self._client = client
        self.done = False  # committed or aborted
        self._snapshot = {name: copy.deepcopy(list(self._client.raw[name].find({})))
                          for name in self._client.raw.list_collection_names()}

    async def __aenter__(self) -> _Transaction:
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is not None:
            self.abort()
        self.done = True

    def abort(self) -> None:
        self.done = True
        for name in self._client.raw.list_collection_names():  # abort: every change is undone
            self._client.raw[name].delete_many({})
            if self._snapshot.get(name):
                self._client.raw[name].insert_many(self._snapshot[name])


class _Session:
    def __init__(self, client: StandInClient) -> None:
        self._client = client
        self._transaction: _Transaction | None = None

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.abort_transaction()  # as end_session: an open transaction is aborted

    @property
    def in_transaction(self) -> bool:
        return self._transaction is not None and not self._transaction.done

    async def start_transaction(self) -> _Transaction:
        self._transaction = _Transaction(self._client)
        return self._transaction

    async def commit_transaction(self) -> None:
        self._client.trip("*", "*", "commit")  # a failed commit leaves the transaction open, as the driver does
        self._transaction = None

    async def abort_transaction(self) -> None:
        if self.in_transaction:
            assert self._transaction is not None
            self._transaction.abort()
            self._transaction = None


class StandInClient:
    """The subset of pymongo.AsyncMongoClient the MongoStore uses."""

    def __init__(self) -> None:
        self._mongo = mongomock.MongoClient()
        self.raw = self._mongo["careloop"]
        self.admin = _Admin()
        self.faults: list[Fault] = []
        self.tripped = 0  # how many calls a fault failed

    def __getitem__(self, name: str) -> _Database:
        return _Database(self._mongo[name], self)

    def fail(self, error: Exception, *, op: str = "*", collection: str = "*", db: str = "careloop",
             times: int | None = 1, after: int = 0) -> Fault:
        """Make matching calls raise `error` (remove the returned Fault from `faults` to heal)."""
        fault = Fault(error, op, collection, db, times, after)
        self.faults.append(fault)
        return fault

    def trip(self, db: str, collection: str, op: str) -> None:
        """Raise the first matching fault's error."""
        for fault in list(self.faults):
            # a commit is the session's, of no one collection: only a fault on "commit" matches it
            matches = fault.op == "commit" if op == "commit" else (
                fault.op in ("*", op) and fault.collection in ("*", collection) and fault.db in ("*", db))
            if matches:
                if fault.after > 0:
                    fault.after -= 1
                    return
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                self.tripped += 1
                raise fault.error

    def start_session(self) -> _Session:
        return _Session(self)

    def close(self) -> None:
        self._mongo.close()


@asynccontextmanager
async def standin() -> AsyncIterator[StandInClient]:
    """A fresh stand-in client."""
    client = StandInClient()
    try:
        yield client
    finally:
        client.close()
