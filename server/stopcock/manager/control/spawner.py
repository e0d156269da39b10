"""TemplateSpawner: asks the warm template (stopcock.runtime.template) for a runtime.

The template listens on DATA_DIR/spawner.sock. If none answers there (no
socket, connection refused) or it speaks another protocol, runs another
Python or another build of our code (an upgrade), a new one is started, in
a session of its own like a runtime, and awaited on a ready pipe. Any
failure returns None: the runner then spawns that runtime cold, so the
template only ever makes starts cheaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
from pathlib import Path
from typing import Any

from stopcock.contract.build import code_fingerprint
from stopcock.contract.runtime_spec import PROTOCOL

log = logging.getLogger("stopcock.runner")

SOCKET_NAME = "spawner.sock"
SUN_PATH_MAX = 107  # as stopcock.runtime.template (the manager does not import the runtime)
EXCHANGE_TIMEOUT_SECS = 5.0  # a fork takes milliseconds; a hung template must not hang a start
TEMPLATE_START_TIMEOUT_SECS = 30.0  # its imports take well under a second
OLD_TEMPLATE_EXIT_TIMEOUT_SECS = 5.0
MESSAGE_BYTES = 1 << 16


def spawn_detached(python: str, module: str, args: list[str], log_fd: int) -> int:
    """`python -m module args` in a session of its own (it outlives the manager and is
    killed as a group), stdin /dev/null, stdout and stderr to `log_fd`, our environment.
    posix_spawn returns as soon as the child exists: it does not wait for it."""
    return os.posix_spawn(
        python,
        [python, "-m", module, *args],
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ],
        setsid=True,
    )


class SpawnerError(Exception):
    pass


class _Absent(SpawnerError):
    """Nothing listens on the socket."""


class _Foreign(SpawnerError):
    """A template of another Stopcock (protocol, build) or Python answers."""

    def __init__(self, pid: int, hello: dict[str, Any]) -> None:
        super().__init__(f"template pid {pid} is foreign: {hello}")
        self.pid = pid


class TemplateSpawner:
    def __init__(self, data_dir: Path, python: str) -> None:
        self._data_dir = data_dir
        self._socket = data_dir / SOCKET_NAME
        self._python = python
        self._build = code_fingerprint()
        # One start of a template at a time, and one exchange at a time: a
        # fork is quick, and two concurrent first spawns must not both start one.
        self._lock = asyncio.Lock()
        self._too_long_logged = False

    @property
    def socket_path(self) -> Path:
        return self._socket

    async def spawn(self, run_dir: Path, ready_fd: int, log_fd: int) -> tuple[int, int] | None:
        """(pid of a runtime forked for `run_dir`, the template's pid), or None (spawn it cold)."""
        if len(os.fsencode(str(self._socket))) > SUN_PATH_MAX:
            if not self._too_long_logged:
                log.warning("%s is too long for a Unix socket: runtimes start cold", self._socket)
                self._too_long_logged = True
            return None
        request = json.dumps({"run_dir": str(run_dir), "env": dict(os.environ)}).encode()
        async with self._lock:
            try:
                return await self._ask(request, [ready_fd, log_fd])
            except (OSError, ValueError, KeyError, TypeError, SpawnerError) as exc:
                log.warning("the runtime template failed (%s): starting the runtime cold", exc)
                return None

    async def _ask(self, request: bytes, fds: list[int]) -> tuple[int, int]:
        try:
            return await asyncio.to_thread(self._exchange, request, fds)
        except _Absent:
            pass
        except _Foreign as foreign:
            log.info("replacing %s", foreign)
            await _kill_and_wait(foreign.pid)
        await self._start_template()
        return await asyncio.to_thread(self._exchange, request, fds)

    def _exchange(self, request: bytes, fds: list[int]) -> tuple[int, int]:
        """Blocking (run in a thread): one request on one connection."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.settimeout(EXCHANGE_TIMEOUT_SECS)
            try:
                conn.connect(str(self._socket))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise _Absent(str(exc)) from exc
            hello = json.loads(conn.recv(MESSAGE_BYTES) or b"null")
            if not isinstance(hello, dict):
                raise SpawnerError("the template closed the connection")
            mine = {"protocol": PROTOCOL, "python": self._python, "build": self._build}
            if any(hello.get(key) != value for key, value in mine.items()):
                raise _Foreign(int(hello["pid"]), hello)
            socket.send_fds(conn, [request], fds)
            reply = json.loads(conn.recv(MESSAGE_BYTES) or b"null")
            if not isinstance(reply, dict) or "pid" not in reply:
                raise SpawnerError(f"the template refused: {reply}")
            return int(reply["pid"]), int(hello["pid"])

    async def _start_template(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_inheritable(write_fd, True)
        log_fd = os.open(
            self._data_dir / "spawner.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            # As a runtime: its own session (it outlives us), our umask and env.
            pid = spawn_detached(
                self._python,
                "stopcock.runtime.template",
                ["--socket", str(self._socket), "--ready-fd", str(write_fd)],
                log_fd,
            )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            os.close(log_fd)
        _reap_when_gone(pid)
        try:
            line = await asyncio.wait_for(_read_line(read_fd), TEMPLATE_START_TIMEOUT_SECS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise SpawnerError("the template did not start listening in time") from None
        if line != b"ready":
            # EXIT_TAKEN: another manager's template (replicas share the
            # data directory) took the socket first; this start goes cold,
            # the next one finds that template.
            raise SpawnerError(f"the template (pid {pid}) exited before listening")
        log.info("started runtime template pid %d on %s", pid, self._socket)


async def _read_line(fd: int) -> bytes:
    """The first line written to the pipe `fd` (b"" if closed first); closes `fd`."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    buf = bytearray()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            return
        buf.extend(chunk)
        if (b"\n" in buf or not chunk) and not done.done():
            done.set_result(bytes(buf.split(b"\n", 1)[0]))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _reap_when_gone(pid: int) -> None:
    """The template is our child while we live: reap it when it dies, leaving no zombie."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return

    def gone() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(pid, os.WNOHANG)
            log.info("runtime template pid %d ended (wait status %d)", pid, status)

    loop.add_reader(pidfd, gone)


async def _kill_and_wait(pid: int) -> None:
    """SIGKILLs a foreign template and waits (bounded) until it is gone, freeing its lock.

    Its own session holds only itself: the runtimes it forked have theirs and live on.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        await asyncio.to_thread(select.select, [pidfd], [], [], OLD_TEMPLATE_EXIT_TIMEOUT_SECS)
    finally:
        os.close(pidfd)
