"""Launch a multi-worker ``skinlesion train`` on this machine: N processes, one TF_CONFIG each.

The same recipe as on N machines, with every worker on 127.0.0.1 (free ports
picked here). Useful to try a multi-worker config before paying for a cluster::

    python examples/multiworker_local.py --workers 2 -- DATA_DIR --out runs/mw \\
        --backbone efficientnet_lite0 --batch-size 16 --resume

Everything after ``--`` is passed to ``skinlesion train`` (``--strategy multiworker``
is added). Worker 0 is the chief: it alone writes the run directory; the others
write to temporary folders and delete them. The launcher exits with the first
non-zero exit code, after stopping the other workers (a multi-worker job is all or
nothing: restart it with ``--resume`` and it continues from the last epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(args.workers)]}
    procs = []
    for i in range(args.workers):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})}
        cmd = [sys.executable, "-m", "skinlesion.cli.main", "train", *train_args,
               "--strategy", "multiworker"]
        procs.append(subprocess.Popen(cmd, env=env))
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    code = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed or (deadline is not None and time.monotonic() > deadline):
                code = failed[0] if failed else 124
                break
            time.sleep(0.5)
        else:
            code = next((p.returncode for p in procs if p.returncode), 0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
