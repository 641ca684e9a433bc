"""The sandbox's server process: a moto server on loopback, detached from the shell.

Started by `sandbox.sandbox_up` as `python -m goldenimage.sandbox.server --host H
--port P --ready FILE`. It binds (port 0 picks a free port), writes `{"pid", "port"}` to
FILE atomically once it answers, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="goldenimage-sandbox-server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready", required=True, help="file to write {pid, port} to")
    args = parser.parse_args(argv)

    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    from pathlib import Path

    from moto.server import ThreadedMotoServer

    from ..fsutil import atomic_write_json

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    atomic_write_json(Path(args.ready), {"pid": os.getpid(), "host": host, "port": port})
    print(
        f"goldenimage sandbox: moto server on http://{host}:{port} (pid {os.getpid()})", flush=True
    )
    while not stop.wait(3600):
        pass
    # in-memory state only: nothing to flush, and werkzeug's shutdown polls for seconds
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
