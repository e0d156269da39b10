"""LocalProcessRunner: one runtime process per deployment, on this machine.

Processes are spawned with `posix_spawn` in a new session (their own process
group), so a manager crash does not take them down and a force stop can kill
the whole group. Everything is event-driven:
  * readiness: the runtime writes its port to a pipe we hold the other end of;
  * exit: a pidfd (works for processes we did not spawn, i.e. re-adopted
    ones) becomes readable when the process dies.
We never use `subprocess.Popen`: its object would race us to reap the child.

By default a runtime is forked from a warm template process (control/spawner.py,
stopcock.runtime.template; STOPCOCK_SPAWNER=template): it shares the
template's imported pages and starts at once. The template, not the manager,
is then its parent and reaps it; it records the wait status in
RUN_DIR/exit.json for us. If the template cannot serve, or with
STOPCOCK_SPAWNER=cold, the runtime is spawned cold as
`python -m stopcock.runtime.main`. Either way it is a session leader we
kill with killpg.

A forked runtime's command line is the template's; its working directory
(/proc/PID/cwd) is its run directory, which is how strays are recognised.

A pid is only trusted together with the kernel's start time of the process
(`/proc/PID/stat` field 22), so a recycled pid is never mistaken for our
runtime.

Test-only fault injection: STOPCOCK_TEST_FAULTS=kill_hold_file=PATH holds
every kill back while PATH exists, which keeps a pipeline in Stopping for as
long as a test needs; the kill follows within ~20 ms of the file's removal.
Never set it in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stopcock.contract.runtime_spec import PROTOCOL, RuntimeSpec
from stopcock.manager.control.hangs import HangWatch
from stopcock.manager.control.spawner import TemplateSpawner, spawn_detached

log = logging.getLogger("stopcock.runner")
FAULTS_ENV = "STOPCOCK_TEST_FAULTS"
_KILL_HOLD_POLL_SECS = 0.02  # test-only: how often a held kill looks at its hold file again
SPAWNERS = ("template", "cold")
EXIT_STATUS_FILE = "exit.json"  # written by the template when it reaps a runtime
# The pidfd of a forked runtime fires as it dies, just before its parent (the
# template) reaps it and writes exit.json: look again this often, this long.
_EXIT_FILE_POLL_SECS = 0.005
_EXIT_FILE_WAIT_SECS = 2.0
RUNTIME_MARKER = b"stopcock.runtime."  # in the argv of cold runtimes and of forked ones
TEMPLATE_MARKER = b"stopcock.runtime.template"  # the template's argv, and its children's


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def runtime_run_dir(pid: int) -> Path | None:
    """The run directory of `pid` if it is a runtime process, else None.

    A cold runtime names it in its argv (`--run-dir DIR`); a forked one has
    the template's argv and its run directory as working directory. The
    template itself works in "/", so it is never taken for a runtime.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if not any(RUNTIME_MARKER in arg for arg in argv):
        return None
    with contextlib.suppress(ValueError, IndexError):
        return Path(os.fsdecode(argv[argv.index(b"--run-dir") + 1]))
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
    # A runtime's cwd is a run directory: pipelines/<id>/run.
    return cwd if cwd.name == "run" and cwd.parent.parent.name == "pipelines" else None


def _parent_records_exit(pid: int) -> bool:
    """Whether `pid` (dead, maybe reaped) may yet get an exit.json from its template."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # reaped already: by the template (then the file is coming) or by nobody
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
    try:
        return TEMPLATE_MARKER in Path(f"/proc/{ppid}/cmdline").read_bytes()
    except OSError:
        return False


def _forked(pid: int) -> bool:
    """Whether `pid` was forked from a template (it has the template's argv)."""
    try:
        return TEMPLATE_MARKER in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _read_exit_file(proc: RuntimeProcess) -> bool:
    if proc.exit_file is None:
        return False
    try:
        info = json.loads(proc.exit_file.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or info.get("pid") != proc.pid:
        return False  # a previous runtime's
    proc.exit_status = int(info["status"])
    return True


@dataclass(eq=False)
class RuntimeProcess:
    """A runtime process we watch. `exited` is set once it is gone."""

    pid: int
    start_time: int
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    exit_status: int | None = None
    port: asyncio.Future[int] | None = None
    # The secret every call to the runtime carries (see runtime_token).
    token: str = ""
    kill_requested: bool = False
    # Where the template records the wait status when it is the parent.
    exit_file: Path | None = None
    _pidfd: int | None = None

    def describe_exit(self) -> str:
        status = self.exit_status
        if status is None:
            return "exited (status unknown: the process was re-adopted)"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return f"was killed by signal {sig} ({signal.Signals(sig).name})"
        return f"exited with code {os.waitstatus_to_exitcode(status)}"


class LocalProcessRunner:
    def __init__(
        self,
        data_dir: Path,
        python: str = sys.executable,
        storage_root: Path | None = None,
        spawner: str = "template",
    ) -> None:
        self._data_dir = data_dir
        self._python = python
        if spawner not in SPAWNERS:
            raise ValueError(f"unknown spawner {spawner!r}: one of {SPAWNERS}")
        self._template = TemplateSpawner(data_dir, python) if spawner == "template" else None
        self._scan: tuple[float, dict[Path, list[int]]] | None = None  # see process_scan
        # Hears from the template when one of its runtimes hangs (None: cold spawns only).
        self.hangs = HangWatch(self._template.socket_path, python) if self._template else None
        # Checkpoints: STOPCOCK_STORAGE_DIR/<id> when set (shared by replicas
        # that take over each other's pipelines), else pipelines/<id>/storage.
        self._storage_root = storage_root
        faults = os.environ.get(FAULTS_ENV, "")
        pairs = dict(item.split("=", 1) for item in faults.split(",") if "=" in item)
        # A misspelt (or retired) fault would silently test nothing: refuse it.
        if unknown := sorted(set(pairs) - {"kill_hold_file"}):
            raise ValueError(f"{FAULTS_ENV}: unknown test faults {unknown}")
        hold = pairs.get("kill_hold_file")
        self._kill_hold_file = Path(hold) if hold else None
        if self._kill_hold_file is not None:
            log.warning("TEST FAULTS ACTIVE: kill_hold_file=%s", self._kill_hold_file)

    def health_problem(self) -> str | None:
        """Why a runtime could not be spawned now, or None (GET /v0/cluster_healthz).

        Spawning writes a run directory under the data directory (and storage
        under the storage root) and executes the interpreter: each must be
        usable. A file system check, so callers run it off the event loop.
        """
        dirs = [self._data_dir] + ([self._storage_root] if self._storage_root else [])
        for directory in dirs:
            if not os.access(directory, os.W_OK | os.X_OK):
                return f"cannot write to {directory}"
        if not os.access(self._python, os.X_OK):
            return f"cannot execute {self._python}"
        return None

    def pipeline_dir(self, pipeline_id: str) -> Path:
        return self._data_dir / "pipelines" / pipeline_id

    def run_dir(self, pipeline_id: str) -> Path:
        return self.pipeline_dir(pipeline_id) / "run"

    def storage_dir(self, pipeline_id: str) -> Path:
        if self._storage_root is not None:
            return self._storage_root / pipeline_id
        return self.pipeline_dir(pipeline_id) / "storage"

    async def spawn(
        self, pipeline_id: str, spec: RuntimeSpec, on_event: Callable[[], None]
    ) -> RuntimeProcess:
        run_dir = self.run_dir(pipeline_id)
        exit_file = run_dir / EXIT_STATUS_FILE
        token = secrets.token_urlsafe(32)
        # Files and directories on a thread: 500 pipelines starting at once
        # must not queue their file system calls on the event loop.
        log_fd = await asyncio.to_thread(
            self._prepare, pipeline_id, dataclasses.replace(spec, runtime_token=token)
        )
        read_fd, write_fd = os.pipe()
        try:
            pid: int | None = None
            if self._template is not None:
                forked = await self._template.spawn(run_dir, write_fd, log_fd)
                if forked is None:
                    # The template may have failed after forking: never two runtimes.
                    self.kill_strays(pipeline_id, keep=None)
                else:
                    pid, template_pid = forked
                    assert self.hangs is not None
                    self.hangs.forked(pid, template_pid)
            how = "forked from the template"
            if pid is None:
                pid, how = self._spawn_cold(run_dir, write_fd, log_fd), "cold"
        finally:
            os.close(write_fd)
            os.close(log_fd)
        start_time = process_start_time(pid) or 0
        proc = RuntimeProcess(
            pid=pid,
            start_time=start_time,
            token=token,
            exit_file=exit_file if how != "cold" else None,
        )
        proc.port = self._read_port(read_fd, on_event)
        self._watch_exit(proc, on_event)
        log.info("spawned runtime pid %d for pipeline %s (%s)", pid, pipeline_id, how)
        return proc

    def _prepare(self, pipeline_id: str, spec: RuntimeSpec) -> int:
        """The run directory, with the spec and nothing of a previous runtime; the log's fd."""
        run_dir = self.run_dir(pipeline_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.storage_dir(pipeline_id).mkdir(parents=True, exist_ok=True, mode=0o700)
        (run_dir / "runtime.json").unlink(missing_ok=True)
        (run_dir / EXIT_STATUS_FILE).unlink(missing_ok=True)  # a previous runtime's
        dataclasses.replace(spec, protocol=PROTOCOL).write(run_dir)
        return os.open(run_dir / "runtime.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _spawn_cold(self, run_dir: Path, write_fd: int, log_fd: int) -> int:
        os.set_inheritable(write_fd, True)
        return spawn_detached(
            self._python,
            "stopcock.runtime.main",
            ["--run-dir", str(run_dir), "--ready-fd", str(write_fd)],
            log_fd,
        )

    def _read_port(self, fd: int, on_event: Callable[[], None]) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        os.set_blocking(fd, False)
        buf = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                return
            buf.extend(chunk)
            if b"\n" in buf or not chunk:
                loop.remove_reader(fd)
                os.close(fd)
                if not future.done():
                    text = buf.split(b"\n", 1)[0].decode(errors="replace")
                    if text.isdigit():
                        future.set_result(int(text))
                    else:
                        future.set_exception(RuntimeError("the runtime exited before listening"))
                on_event()

        loop.add_reader(fd, readable)
        # The future's exception is consumed by the actor; avoid "never
        # retrieved" noise when a process dies before anyone looked.
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        return future

    def _watch_exit(self, proc: RuntimeProcess, on_event: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            self._reap(proc)
            proc.exited.set()
            return
        proc._pidfd = pidfd

        def settled() -> None:
            proc.exited.set()
            log.info("runtime pid %d %s", proc.pid, proc.describe_exit())
            on_event()

        def gone() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            proc._pidfd = None
            if self._reap(proc) or proc.exit_file is None or not _parent_records_exit(proc.pid):
                settled()
            else:
                deadline = loop.time() + _EXIT_FILE_WAIT_SECS
                self._await_exit_file(proc, deadline, settled)

        loop.add_reader(pidfd, gone)

    def _await_exit_file(
        self, proc: RuntimeProcess, deadline: float, settled: Callable[[], None]
    ) -> None:
        """A bounded poll for the template's exit.json (it has no event to wait on)."""
        loop = asyncio.get_running_loop()
        if _read_exit_file(proc) or loop.time() > deadline:
            settled()
        else:
            loop.call_later(_EXIT_FILE_POLL_SECS, self._await_exit_file, proc, deadline, settled)

    @staticmethod
    def _reap(proc: RuntimeProcess) -> bool:
        """Records the exit status if it is known now: ours to reap, or in exit.json."""
        # Only our own (cold) children can be waited for: never waitpid a
        # process we did not spawn (the template reaps its own).
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.exit_status = status
                return True
        return _read_exit_file(proc)

    def spawned_spec(self, pipeline_id: str) -> RuntimeSpec | None:
        """The spec the pipeline's runtime was spawned with, if it can be read."""
        try:
            return RuntimeSpec.read(self.run_dir(pipeline_id))
        except (OSError, ValueError):
            return None

    def adopt(
        self,
        pipeline_id: str,
        pid: int,
        start_time: int,
        port: int | None,
        on_event: Callable[[], None],
    ) -> RuntimeProcess | None:
        """Watches a runtime spawned by an earlier manager, if it still lives."""
        if process_start_time(pid) != start_time:
            return None
        spec = self.spawned_spec(pipeline_id)
        if spec is None or spec.protocol != PROTOCOL:
            # Spawned by another Stopcock (an upgrade while it ran): it cannot
            # be commanded, so it is stopped; its pipeline is then recorded
            # as having lost its runtime, and restarts from its checkpoint.
            log.warning(
                "runtime pid %d speaks internal protocol %s, this manager %d: stopping it",
                pid,
                spec.protocol if spec is not None else "unknown",
                PROTOCOL,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            return None
        proc = RuntimeProcess(
            pid=pid,
            start_time=start_time,
            token=spec.runtime_token,
            exit_file=self.run_dir(pipeline_id) / EXIT_STATUS_FILE if _forked(pid) else None,
        )
        if port is not None:
            proc.port = asyncio.get_running_loop().create_future()
            proc.port.set_result(port)
        self._watch_exit(proc, on_event)
        log.info("re-adopted runtime pid %d", pid)
        return proc

    def process_scan(self, not_before: float) -> dict[Path, list[int]]:
        """Runtime processes by run directory, from a scan of /proc made after `not_before`.

        A restart re-adopts every pipeline and looks for strays of each: one
        scan of /proc per pipeline would make that quadratic (500 pipelines,
        a minute). The scan is reused while it is recent enough for the
        caller: one made after the caller's lease was granted sees every
        runtime any earlier owner started.
        """
        if self._scan is None or self._scan[0] < not_before:
            found: dict[Path, list[int]] = {}
            taken = time.monotonic()
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    run_dir = runtime_run_dir(int(entry.name))
                    if run_dir is not None:
                        found.setdefault(run_dir, []).append(int(entry.name))
            self._scan = (taken, found)
        return self._scan[1]

    def kill_strays(
        self, pipeline_id: str, keep: int | None, scan: dict[Path, list[int]] | None = None
    ) -> list[int]:
        """Kills the pipeline's runtime processes but `keep`; returns their pids.

        A manager that died between spawning a runtime and recording its pid
        (or before the runtime wrote runtime.json) leaves one nobody knows;
        a new manager finds it (runtime_run_dir: by its command line or its
        working directory) and stops it before it could ever run beside its
        successor. `scan` (process_scan) saves a scan of /proc; without it,
        /proc is scanned now.
        """
        run_dir = self.run_dir(pipeline_id)
        if scan is None:
            candidates = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
        else:
            candidates = scan.get(run_dir, [])
        strays = []
        for pid in candidates:
            # Checked again even from a scan: that pid may be another process by now.
            if pid != keep and runtime_run_dir(pid) == run_dir:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                strays.append(pid)
        return strays

    def find_runtime(self, pipeline_id: str, deployment_id: str) -> tuple[int, int, int] | None:
        """(pid, start time, port) of a live runtime of `deployment_id`, from runtime.json.

        Covers a manager that died after spawning but before recording the pid.
        """
        try:
            info = json.loads((self.run_dir(pipeline_id) / "runtime.json").read_text())
        except (OSError, ValueError):
            return None
        if info.get("deployment_id") != deployment_id:
            return None
        start = process_start_time(int(info["pid"]))
        return None if start is None else (int(info["pid"]), start, int(info["port"]))

    def kill(self, proc: RuntimeProcess) -> None:
        """Deprovisions at once: SIGKILL to the whole process group."""
        if proc.kill_requested or proc.exited.is_set():
            return
        proc.kill_requested = True
        hold = self._kill_hold_file
        if hold is not None and hold.exists():
            log.warning("test fault: holding the kill of pid %d while %s exists", proc.pid, hold)
            self._kill_once_released(proc, hold)
        else:
            self._killpg(proc)

    def _kill_once_released(self, proc: RuntimeProcess, hold: Path) -> None:
        """Test-only: kills `proc` as soon as `hold` is gone.

        A bounded poll on the event loop (one stat every 20 ms, nothing ever
        waits): enough for a test switch, where a file watch would need inotify,
        which the standard library lacks.
        """
        if hold.exists():
            loop = asyncio.get_running_loop()
            loop.call_later(_KILL_HOLD_POLL_SECS, self._kill_once_released, proc, hold)
        else:
            self._killpg(proc)

    @staticmethod
    def _killpg(proc: RuntimeProcess) -> None:
        if proc.exited.is_set() or process_start_time(proc.pid) != proc.start_time:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        # And the process itself: one that does not lead a group (yet) is not
        # reached by killpg, and a kill must never be lost (kill_requested
        # means it is not sent again).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)

    def forget(self, proc: RuntimeProcess) -> None:
        """Stops watching (manager shutdown) without touching the process."""
        if proc._pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(proc._pidfd)
            os.close(proc._pidfd)
            proc._pidfd = None

    def clear_storage(self, pipeline_id: str) -> None:
        shutil.rmtree(self.storage_dir(pipeline_id), ignore_errors=True)

    def remove_pipeline(self, pipeline_id: str) -> None:
        shutil.rmtree(self.storage_dir(pipeline_id), ignore_errors=True)
        shutil.rmtree(self.pipeline_dir(pipeline_id), ignore_errors=True)
