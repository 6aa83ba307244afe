"""Debian's Varnish in front of a gateway, configured by the VCL the cache rules generate: the
local edge the edge, purge and fleet tests run behind."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from edgemart.settings import IPNetwork
from gateway.edge import render_vcl
from tests.conftest import unused_port

VARNISHD = shutil.which("varnishd") or (
    "/usr/sbin/varnishd" if Path("/usr/sbin/varnishd").exists() else None
)
"""The varnishd binary, or None where Varnish is not installed (the tests that need it skip)."""


def wait_for_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def varnish(
    tmp_path: Path,
    backend_port: int,
    *,
    purgers: Sequence[IPNetwork] = (),
    port: int | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """varnishd with the generated VCL in front of the gateway on `backend_port`: (process,
    URL). `port`, where it listens, when the gateway must know it before the edge starts."""
    vcl = tmp_path / "edge.vcl"
    vcl.write_text(render_vcl("127.0.0.1", backend_port, purgers=purgers))
    port = port or unused_port()
    process = subprocess.Popen(
        [
            str(VARNISHD),
            "-F",
            "-j",
            "none",
            "-a",
            f"127.0.0.1:{port}",
            "-f",
            str(vcl),
            "-n",
            str(tmp_path / "varnish"),
            "-s",
            "malloc,32m",
            "-T",
            "none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
    except RuntimeError as exc:
        process.kill()
        _, stderr = process.communicate(timeout=10)
        raise RuntimeError(f"varnishd did not start: {stderr.decode()}") from exc
    return process, f"http://127.0.0.1:{port}"
