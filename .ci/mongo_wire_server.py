"""A MongoDB-wire-compatible test server for courier's Mongo path.

No MongoDB server is installable from the package registries this project's CI reaches, so
the Mongo-path tests run against BriskDB (PyPI `briskdb[pymongo]`), which speaks the
MongoDB wire protocol. It is a stand-in for tests, not MongoDB.

Usage: python3 .ci/mongo_wire_server.py PORT DATA_DIR
Prints "ready" once the listener accepts connections, then serves until killed.
"""

import asyncio
import os
import sys

import briskdb


async def main(port: int, data_dir: str) -> None:
    os.makedirs(data_dir, exist_ok=True)
    db = await briskdb.open_async(os.path.join(data_dir, "mongo.db"), shards=2, documents=True)
    server = await db.serve(mongo=f"127.0.0.1:{port}", admin=None)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        del server


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
