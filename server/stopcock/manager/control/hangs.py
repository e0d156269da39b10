"""HangWatch: which runtimes are stopped (hung), told by the kernel, not by pings.

A runtime that is stopped (SIGSTOP, a cgroup freezer, a debugger) keeps its
TCP connections open, so nothing breaks until something asks it. Pinging
every runtime every second finds it, but costs CPU per idle pipeline: 500
idle pipelines would burn a good part of a core doing nothing.

The template that forked a runtime is its parent, so the kernel tells it
when the runtime stops or continues (stopcock.runtime.template). The
manager subscribes on the template's socket and hears every change at once;
while nothing happens, the subscription costs nothing but one open socket.

A runtime this watch does not cover (spawned cold, or whose template died
and so can no longer hear it) is still watched the old way: its client
pings it (RuntimeClient keepalive). `covers` tells which way applies; when
the template goes, every runtime it covered is reported "uncovered", so its
actor reconnects with pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from stopcock.contract.build import code_fingerprint
from stopcock.contract.runtime_spec import PROTOCOL

log = logging.getLogger("stopcock.runner")

Event = Literal["stopped", "continued", "covered", "uncovered"]
Listener = Callable[[Event], None]
HANDSHAKE_TIMEOUT_SECS = 2.0  # the template answers at once; a hung one must not hang us
MESSAGE_BYTES = 1 << 20  # a snapshot lists every child's pid


class HangWatch:
    """The manager's subscription to one template's runtime events."""

    def __init__(self, socket_path: Path, python: str) -> None:
        self._path = socket_path
        self._mine = {"protocol": PROTOCOL, "python": python, "build": code_fingerprint()}
        self._sock: socket.socket | None = None
        self.template_pid: int | None = None
        self._children: set[int] = set()
        self._stopped: set[int] = set()
        self._listeners: dict[int, Listener] = {}
        self._connecting: asyncio.Task[bool] | None = None

    # -- what the actors ask ------------------------------------------

    def covers(self, pid: int) -> bool:
        """Whether a stop of `pid` would be heard here (then its client need not ping)."""
        return self._sock is not None and pid in self._children

    def is_stopped(self, pid: int) -> bool:
        return pid in self._stopped

    def listen(self, pid: int, listener: Listener) -> Callable[[], None]:
        """Calls `listener` on each change of `pid`; returns the way to stop listening."""
        self._listeners[pid] = listener

        def forget() -> None:
            if self._listeners.get(pid) is listener:
                del self._listeners[pid]

        return forget

    def forked(self, pid: int, template_pid: int) -> None:
        """The spawner's news (it may come before the template's own event)."""
        if self._sock is not None and template_pid == self.template_pid:
            self._children.add(pid)
            return
        # A template we do not watch yet (just started, or replaced): once
        # subscribed, its snapshot lists this pid. Until then it is pinged.
        self._reconnect()

    def _reconnect(self) -> None:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self.connect())

    # -- the subscription ---------------------------------------------

    async def connect(self) -> bool:
        """Subscribes if not subscribed yet; False if no (compatible) template answers.

        Called at start and whenever a spawn found a template we do not
        watch: never on a timer, since with no template there is nothing to
        hear. The handshake runs on a thread: a template busy forking must
        not hold up the event loop.
        """
        if self._sock is not None:
            return True
        try:
            sock, snapshot, template_pid = await asyncio.to_thread(self._handshake)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("no runtime template to watch at %s: %s", self._path, exc)
            return False
        if self._sock is not None:  # another connect won meanwhile
            sock.close()
            return True
        self._sock = sock
        self.template_pid = template_pid
        self._children = {int(pid) for pid in snapshot["children"]}
        stopped = {int(pid) for pid in snapshot["stopped"]}
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        log.info(
            "watching the %d runtimes of template pid %d for hangs",
            len(self._children),
            template_pid,
        )
        # Stops that happened while nobody watched.
        for pid in stopped - self._stopped:
            self._apply("stopped", pid)
        for pid in self._stopped - stopped:
            self._apply("continued", pid)
        # Runtimes pinged so far that this template watches: pings can stop.
        for pid, listener in list(self._listeners.items()):
            if pid in self._children and pid not in stopped:
                listener("covered")
        return True

    def _handshake(self) -> tuple[socket.socket, dict[str, Any], int]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_SECS)
            sock.connect(str(self._path))
            hello = json.loads(sock.recv(MESSAGE_BYTES) or b"null")
            if not isinstance(hello, dict):
                raise ValueError("the template closed the connection")
            if any(hello.get(key) != value for key, value in self._mine.items()):
                # A template of another build: the spawner replaces it at the
                # next start, and that start subscribes again.
                raise ValueError(f"template pid {hello.get('pid')} is foreign")
            sock.send(json.dumps({"watch": True}).encode())
            snapshot = json.loads(sock.recv(MESSAGE_BYTES) or b"null")
            if not isinstance(snapshot, dict):
                raise ValueError("the template closed the connection")
            sock.setblocking(False)
            return sock, snapshot, int(hello["pid"])
        except BaseException:
            sock.close()
            raise

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(MESSAGE_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("lost the runtime template's events: %s", exc)
                data = b""
            if not data:
                self._lost()
                return
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message = json.loads(data)
                self._on_event(str(message["event"]), int(message["pid"]))

    def _on_event(self, event: str, pid: int) -> None:
        if event == "forked":
            self._children.add(pid)
        elif event == "exited":
            self._children.discard(pid)
            self._stopped.discard(pid)
        elif event in ("stopped", "continued"):
            self._apply(event, pid)  # type: ignore[arg-type]

    def _apply(self, event: Event, pid: int) -> None:
        if event == "stopped":
            self._stopped.add(pid)
            log.warning("runtime pid %d is stopped (hung): it cannot answer", pid)
        elif event == "continued":
            self._stopped.discard(pid)
            log.info("runtime pid %d continues", pid)
        listener = self._listeners.get(pid)
        if listener is not None:
            listener(event)

    def _lost(self) -> None:
        """The template is gone: nobody hears its former children any more."""
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        orphans, self._children = self._children, set()
        self._stopped.clear()
        log.warning(
            "the runtime template (pid %s) is gone: %d runtimes are watched by pings again",
            self.template_pid,
            len(orphans),
        )
        self.template_pid = None
        for pid in orphans:
            listener = self._listeners.get(pid)
            if listener is not None:
                listener("uncovered")
        # The template may live and have dropped us (too far behind): then it
        # takes us back, with its snapshot, and its runtimes are covered again.
        self._reconnect()

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._sock is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
