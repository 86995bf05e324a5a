"""Before a slow start: is the port free, and if not, which process holds it (Linux /proc).

https://man7.org/linux/man-pages/man5/proc.5.html (/proc/net/tcp, /proc/[pid]/fd)
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holder(port: int) -> str | None:
    """'pid N (command line)' of a process listening on the port, when this user may see it; else None."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                return f"pid {proc.name} ({command[:120]})"
        except OSError:  # gone, or another user's process
            continue
    return None


def port_in_use(host: str, port: int) -> str | None:
    """None when the server could listen on host:port; else a sentence saying who holds it and what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"cannot listen on {host}:{port}: {exc.strerror}"
        else:
            return None
    holder = port_holder(port)
    who = f"it is held by {holder}" if holder else "another process holds it"
    return (f"port {port} on {host} is already in use ({who}). Stop that process, or choose another port with "
            f"--port or CARELOOP_PORT (e.g. CARELOOP_PORT={port + 1}).")
