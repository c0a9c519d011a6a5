#!/usr/bin/env python3
# Memory per plain HTTP connection: holds N connections to a server on loopback, either
# silent (accepted, nothing sent) or keep-alive after one GET /healthz, and prints the
# server's resident memory before and after (from /proc/PID/status).
#
#   python3 bench/hold_http.py silent|keepalive N PORT SERVER_PID
#
# N must fit under `ulimit -n` (the script holds N sockets).
import asyncio
import sys

MODE, N, PORT, PID = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
IN_FLIGHT = 200  # connections being opened at once
SETTLE_SECS = 2  # wait before the second reading, for the server to finish its work


def rss_kib():
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def hold_one(held):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    if MODE == "keepalive":
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = await reader.read(4096)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            data += chunk
    held.append((reader, writer))


async def main():
    held = []
    before = rss_kib()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def gated():
        async with gate:
            await hold_one(held)

    await asyncio.gather(*(gated() for _ in range(N)))
    await asyncio.sleep(SETTLE_SECS)
    after = rss_kib()
    print(
        f"{MODE}: {len(held)} held; server RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB; "
        f"{(after - before) / len(held):.2f} KiB per connection"
    )


asyncio.run(main())
