"""A ``mast-serve`` in a child process on free loopback ports: started, waited for, measured and
stopped within bounded times (the tests and ``benchmarks/bench_serve.py`` use it; torch-free). The
server runs in a process group of its own (Triton and its helpers included), so it can be killed
whole as a crash would.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mast.core.errors import MastError
from mast.runtime.client import auth_headers, tritonclient_grpc
from mast.runtime.protocol import MODEL_NAME, TOKEN_ENV
from mast.runtime.serve_scratch import descendants

LOOPBACK = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """``n`` loopback TCP ports free right now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((LOOPBACK, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_port_free(port: int, timeout: float = 60.0) -> None:
    """Until nothing listens on loopback ``port`` (a killed server's Triton exits after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) != 0:
                return
        time.sleep(0.2)
    raise MastError(f"port {port} is still in use {timeout:g} s later")


def tree_rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of ``pid`` and all its descendants (Triton, its helper processes), MiB."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            total += _rss(p)
        except (OSError, AttributeError):
            continue
    return total


class ServeProcess:
    """``mast-serve ARGS`` on loopback ports (http, grpc, metrics: ``ports``, free ones by default),
    output in ``log``; ready (model ``mast`` loaded) when the constructor returns, or MastError.
    ``threads``: OMP_NUM_THREADS of the server; ``token``: its shared secret (passed as $MAST_TOKEN).
    ``wait``: False returns once the process is started (:meth:`wait_ready` waits)."""

    def __init__(self, log: Path, *args: str, ports: list[int] | None = None, threads: int = 1,
                 start_timeout: float = 120.0, token: str | None = None, wait: bool = True) -> None:
        self.ports = ports or free_ports(3)
        self.url = f"{LOOPBACK}:{self.ports[1]}"
        self.log = log
        cmd = [sys.executable, "-m", "mast.runtime.serve", "--address", LOOPBACK, "--http-port", str(self.ports[0]),
               "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2]), *args]
        self.token = token
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | {"OMP_NUM_THREADS": str(threads)}
        with open(log, "w") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env | ({TOKEN_ENV: token} if token else {}))
        if wait:
            self.wait_ready(start_timeout)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the model is ready (MastError after ``timeout`` s, the server killed)."""
        grpc = tritonclient_grpc()
        client = grpc.InferenceServerClient(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if client.is_model_ready(MODEL_NAME, headers=auth_headers(self.token), client_timeout=2):
                    return
            except grpc.InferenceServerException:
                pass
            time.sleep(0.5)
        self.kill_group()
        raise MastError(f"mast-serve did not become ready in {timeout:g} s: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text()

    def wait_output(self, text: str, timeout: float = 30.0) -> str:
        """The output once it holds ``text`` (the server writes its start line just after Triton
        reports the model ready, so right after :meth:`wait_ready` it may not be there yet);
        MastError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while text not in (out := self.output()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if text not in out:
            raise MastError(f"mast-serve did not print {text!r} in {timeout:g} s: {out[-2000:]}")
        return out

    def rss_mib(self) -> float:
        """RSS of the server process alone (MiB)."""
        return _rss(self.process.pid)

    def tree_rss_mib(self) -> float:
        """RSS of the server with Triton and its helper processes (MiB)."""
        return tree_rss_mib(self.process.pid)

    def kill_group(self, sig: int = signal.SIGKILL, timeout: float = 60.0) -> int:
        """Send ``sig`` to the server's whole process group (Triton and its helpers: a crash) and
        wait for the server's exit code."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        return self.process.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit code (killed after ``timeout`` s)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise


def _rss(pid: int) -> float:
    """VmRSS of ``pid`` (MiB)."""
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
