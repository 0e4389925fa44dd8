"""The seed's example client: connect, say hello, print what the node answers.

    pip install websockets
    python3 examples/hello_client.py [ws://localhost:6789]

"Hello, World!" is not a JSON frame, so after the `welcome` frame the node
answers with an `error` frame (code `bad_frame`) and keeps the connection open.
"""
import asyncio
import sys

import websockets


async def main(url: str) -> None:
    async with websockets.connect(url) as ws:
        await ws.send("Hello, World!")
        print(await ws.recv())  # welcome
        print(await ws.recv())  # the reply to "Hello, World!"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:6789"))
