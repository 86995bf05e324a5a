"""An in-process stand-in for PyMongo's async client, over mongomock, for machines without a MongoDB server.

It offers only the calls the MongoStore makes, awaitable like the real ones. Transactions are emulated by
snapshotting the database at start and restoring it on abort, so atomicity can be tested; a real replica set
(CARELOOP_TEST_MONGODB_URL) is what proves the adapter against MongoDB itself.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


class _Collection:
    def __init__(self, collection: Any) -> None:
        self._c = collection

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
    def __init__(self, db: Any) -> None:
        self._db = db

    def __getattr__(self, name: str) -> _Collection:
        return _Collection(self._db[name])

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._db[name])


class _Admin:
    async def command(self, name: str) -> dict[str, Any]:
        return {"ok": 1} if name == "ping" else {"ok": 1, "setName": "standin", "isWritablePrimary": True}


class _Transaction:
    def __init__(self, client: StandInClient) -> None:
        self._client = client

    async def __aenter__(self) -> _Transaction:
        self._snapshot = {name: copy.deepcopy(list(self._client.raw[name].find({})))
                          for name in self._client.raw.list_collection_names()}
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            return
        for name in self._client.raw.list_collection_names():  # abort: every change is undone
            self._client.raw[name].delete_many({})
            if self._snapshot.get(name):
                self._client.raw[name].insert_many(self._snapshot[name])


class _Session:
    def __init__(self, client: StandInClient) -> None:
        self._client = client

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def start_transaction(self) -> _Transaction:
        return _Transaction(self._client)


class StandInClient:
    """The subset of pymongo.AsyncMongoClient the MongoStore uses."""

    def __init__(self) -> None:
        self._mongo = mongomock.MongoClient()
        self.raw = self._mongo["careloop"]
        self.admin = _Admin()

    def __getitem__(self, name: str) -> _Database:
        return _Database(self._mongo[name])

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
