"""The warm template runtimes are forked from: `python -m stopcock.runtime.template`.

A cold runtime pays for starting Python and importing gRPC, protobuf, SQLite
and our modules, and keeps a private copy of all of it. The template does
that once; each runtime is then a fork that shares those pages with it (and
with its siblings) until one of them writes to them.

It imports what a runtime needs but starts no thread and creates no gRPC
object before it forks: gRPC's core is not fork-safe once initialised, and
a thread would not exist in the child anyway. `gc.freeze()` keeps the
collector from touching (and so copying) the imported objects in children.

The manager (stopcock.manager.control.spawner) starts it in a session of its
own, so it and its children outlive the manager, with:
  --socket PATH   a Unix SEQPACKET socket to listen on, in the manager's
                  private data directory; PATH.lock is held while serving,
                  so a second template for the same path exits at once
                  (EXIT_TAKEN)
  --ready-fd N    written "ready\\n" once it listens, then closed

One request per connection, each message one datagram:
  template → {"protocol": PROTOCOL, "python": sys.executable, "build": the
             code's fingerprint (stopcock.contract.build), "pid": its pid}
  manager  → {"run_dir": DIR, "env": {...}} with two fds (SCM_RIGHTS): the
             runtime's ready pipe (write end) and its log file
  template → {"pid": the runtime's pid} or {"error": why}
The manager replaces a template whose protocol, Python or build differs from its own.

Or, instead of a spawn request, a manager subscribes to what happens to the
runtimes this template forked (stopcock.manager.control.hangs):
  manager  → {"watch": true}
  template → {"children": [pids], "stopped": [pids]}, then one datagram per
             event: {"event": "forked" | "stopped" | "continued" | "exited", "pid": P}
Being their parent, the template hears from the kernel (SIGCHLD, waitpid with
WUNTRACED | WCONTINUED) when a runtime is stopped (SIGSTOP, a freezer) or
continued: the manager learns that a runtime hangs without pinging it, so an
idle runtime costs nothing. The subscription stays open; a subscriber that
does not keep up (its socket buffer full) is dropped, and sees the close.

The template reaps its children and writes each one's wait status to
RUN_DIR/exit.json ({"pid", "status"}), since the manager, not being their
parent, cannot learn it otherwise. Its log (spawner.log) is not rotated:
it logs a line per fork and exit only at DEBUG.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import NoReturn

# Everything a runtime imports, imported once here (grpc.aio, the stubs and
# the runtime's HTTP/2 server with h2 come with it); nothing of it may start a
# thread or a gRPC core at import.
import grpc.aio  # noqa: F401
from stopcock.contract.build import code_fingerprint
from stopcock.contract.runtime_spec import PROTOCOL
from stopcock.runtime import main as runtime_main

log = logging.getLogger("stopcock.runtime.template")

SUN_PATH_MAX = 107  # bytes of a Unix socket path (sun_path is 108 with its NUL)
EXIT_TAKEN = 3  # another template holds the lock: it serves this path
EXIT_STATUS_FILE = "exit.json"
MESSAGE_BYTES = 1 << 20  # a request carries the manager's environment
CONNECTION_TIMEOUT_SECS = 5.0  # a client that stalls must not hold up every other start


def write_exit_status(run_dir: Path, pid: int, status: int) -> None:
    """RUN_DIR/exit.json, atomically: the manager may read it at any moment."""
    tmp = run_dir / (EXIT_STATUS_FILE + ".tmp")
    try:
        tmp.write_text(json.dumps({"pid": pid, "status": status}))
        os.replace(tmp, run_dir / EXIT_STATUS_FILE)
    except OSError as exc:  # the pipeline may have been deleted meanwhile
        log.warning("could not record the exit of pid %d in %s: %s", pid, run_dir, exc)


class Template:
    def __init__(self, listener: socket.socket, wakeup: int, lock_fd: int) -> None:
        # Taken once the modules are imported: the code this template runs.
        self._build = code_fingerprint()
        self._listener = listener
        self._wakeup = wakeup
        self._lock_fd = lock_fd
        self._children: dict[int, Path] = {}
        self._stopped: set[int] = set()
        self._watchers: set[socket.socket] = set()
        self._selector = selectors.DefaultSelector()

    def serve(self) -> NoReturn:
        selector = self._selector
        selector.register(self._listener, selectors.EVENT_READ, "accept")
        selector.register(self._wakeup, selectors.EVENT_READ, "reap")
        while True:
            for key, _ in selector.select():
                if key.data == "reap":
                    # Drain the wakeup pipe, then every changed child: signals coalesce.
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wakeup, 512):
                            pass
                    self._reap()
                elif key.data == "accept":
                    self._accept()
                else:
                    # A subscriber never sends after subscribing: readable means closed.
                    self._drop(key.fileobj)  # type: ignore[arg-type]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED | os.WCONTINUED)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSTOPPED(status):
                self._stopped.add(pid)
                self._publish("stopped", pid)
                log.debug("runtime pid %d stopped by signal %d", pid, os.WSTOPSIG(status))
                continue
            if os.WIFCONTINUED(status):
                self._stopped.discard(pid)
                self._publish("continued", pid)
                log.debug("runtime pid %d continued", pid)
                continue
            self._stopped.discard(pid)
            run_dir = self._children.pop(pid, None)
            if run_dir is not None:
                write_exit_status(run_dir, pid, status)
                self._publish("exited", pid)
            log.debug("runtime pid %d ended (wait status %d)", pid, status)

    def _publish(self, event: str, pid: int) -> None:
        message = json.dumps({"event": event, "pid": pid}).encode()
        for watcher in list(self._watchers):
            try:
                watcher.send(message)
            except OSError:  # gone, or too far behind (buffer full): it sees the close
                self._drop(watcher)

    def _watch(self, conn: socket.socket) -> None:
        """Keeps `conn` as a subscriber, after sending it the present state."""
        snapshot = {"children": sorted(self._children), "stopped": sorted(self._stopped)}
        conn.send(json.dumps(snapshot).encode())
        conn.setblocking(False)
        self._watchers.add(conn)
        self._selector.register(conn, selectors.EVENT_READ, "watcher")
        log.debug("a subscriber watches %d runtimes", len(self._children))

    def _drop(self, watcher: socket.socket) -> None:
        if watcher in self._watchers:
            self._watchers.discard(watcher)
            self._selector.unregister(watcher)
        watcher.close()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        fds: list[int] = []
        kept = False
        try:
            try:
                conn.settimeout(CONNECTION_TIMEOUT_SECS)
                hello = {
                    "protocol": PROTOCOL,
                    "python": sys.executable,
                    "build": self._build,
                    "pid": os.getpid(),
                }
                conn.send(json.dumps(hello).encode())
                data, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 2)
                if not data:
                    return  # the manager only looked (another protocol: it replaces us)
                request = json.loads(data)
                if request.get("watch") is True and not fds:
                    self._watch(conn)
                    kept = True
                    return
                if len(fds) != 2:
                    raise ValueError(f"expected 2 fds, got {len(fds)}")
                run_dir = Path(request["run_dir"])
                env = {str(k): str(v) for k, v in dict(request["env"]).items()}
                pid = self._fork(conn, run_dir, env, ready_fd=fds[0], log_fd=fds[1])
                # Subscribers hear of it first: the one that asked may be one of them.
                self._publish("forked", pid)
                conn.send(json.dumps({"pid": pid}).encode())
                log.debug("forked runtime pid %d in %s", pid, run_dir)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("refused a request: %s", exc)
                with contextlib.suppress(OSError):
                    conn.send(json.dumps({"error": str(exc)}).encode())
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        finally:
            if not kept:
                conn.close()

    def _fork(
        self, conn: socket.socket, run_dir: Path, env: dict[str, str], ready_fd: int, log_fd: int
    ) -> int:
        if not run_dir.is_absolute() or not run_dir.is_dir():
            raise ValueError(f"not a run directory: {run_dir}")
        # The answer waits until the child leads its own process group and
        # works in its run directory: a manager that killpg()s it at once (a
        # force stop right after the start) must reach it, and a stray sweep
        # must recognise it. A kill sent before setsid() found no group and
        # left a runtime running (seen in CI).
        settled_r, settled_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(settled_r)
            self._become_runtime(conn, run_dir, env, ready_fd, log_fd, settled_fd=settled_w)
        os.close(settled_w)
        try:
            os.read(settled_r, 1)  # b"" if the child died first: it is reaped as usual
        finally:
            os.close(settled_r)
        # Recorded before the loop can reap it: reaping only happens there.
        self._children[pid] = run_dir
        return pid

    def _become_runtime(
        self,
        conn: socket.socket,
        run_dir: Path,
        env: dict[str, str],
        ready_fd: int,
        log_fd: int,
        *,
        settled_fd: int,
    ) -> NoReturn:
        status = 1
        try:
            os.setsid()  # its own session and process group: killpg reaches it alone
            # Undo what the template set up for itself: the runtime's asyncio
            # loop installs its own handlers and wakeup fd.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            # Close through the objects that own fds, so that nothing closes a
            # reused number later; then whatever else was inherited.
            conn.close()
            self._listener.close()
            for watcher in self._watchers:
                watcher.close()
            keep = {0, 1, 2, ready_fd, settled_fd}
            for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
                if fd not in keep:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            os.environ.clear()
            os.environ.update(env)
            # The cwd names the run directory in /proc/PID/cwd: the command
            # line is the template's, so this is how a runtime is recognised.
            os.chdir(run_dir)
            os.write(settled_fd, b"1")  # the template may answer now (see _fork)
            os.close(settled_fd)
            logging.root.handlers.clear()  # the runtime configures its own, from its env
            argv = ["--run-dir", str(run_dir), "--ready-fd", str(ready_fd)]
            sys.argv = [sys.argv[0], *argv]
            runtime_main.main(argv)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)


def _listen(path: Path) -> tuple[socket.socket, int]:
    """Takes PATH.lock and listens on PATH; exits EXIT_TAKEN if another template serves."""
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another template serves %s", path)
        sys.exit(EXIT_TAKEN)
    # Under the lock a socket file left there is a dead template's.
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    listener.listen(64)
    return listener, lock_fd


def main(argv: list[str] | None = None) -> None:
    os.umask(0o077)
    parser = argparse.ArgumentParser(
        description="Stopcock runtime template (started by the manager)"
    )
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("STOPCOCK_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path: Path = args.socket.absolute()
    if len(os.fsencode(str(path))) > SUN_PATH_MAX:
        parser.exit(2, f"socket path longer than {SUN_PATH_MAX} bytes: {path}\n")
    os.chdir("/")  # never pin (nor look like a runtime of) any run directory
    listener, lock_fd = _listen(path)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    # A Python-level handler is needed for the wakeup fd to hear SIGCHLD;
    # the reaping itself happens in the loop, never inside the handler.
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    template = Template(listener, wake_r, lock_fd)
    gc.collect()
    gc.freeze()
    log.info("template pid %d serving %s (protocol %d)", os.getpid(), path, PROTOCOL)
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    template.serve()


if __name__ == "__main__":
    main()
