"""Process bookkeeping from /proc: CPU use per role, and leftover processes.

CPU use is what tells *why* a throughput figure is what it is: a manager at
~1.0 core is the bottleneck (it is a single-threaded asyncio process), a
load generator near 1.0 core means the client, not the server, set the pace.
Each load run samples utime+stime of the manager and of Envoy before and
after, and divides by the wall time: "cores" used on average.

`rss_mib` and `peak_rss_mib` read a process's resident memory (VmRSS, and
VmHWM, its lifetime peak) from /proc/PID/status.

`open_file_mib` sums the space of the files a process holds open whose path
contains some text, deleted ones included: the runtime's database lives in
unlinked tmpfs files (memory that is not in its RSS) and it spools a long
ingress body into an unlinked temporary file.

`leftovers` finds any process whose command line names the benchmark's
temporary directory (Envoy's config, runtime processes' data directories),
or any child of ours still alive, so that the report can say that nothing
was left behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterable
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after its closing parenthesis. Fields then start at field 3 (state).
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (its threads included); 0 if gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime and stime are fields 14 and 15 of /proc/PID/stat.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (from /proc/stat), every process's."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _status_kib(pid: int, field: str) -> int | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])  # "VmRSS:   12345 kB"
    return None  # a zombie has no memory fields


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` now (VmRSS), in MiB; 0 if gone."""
    return (_status_kib(pid, "VmRSS") or 0) / 1024


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of `pid` over its life (VmHWM), in MiB; 0 if gone."""
    return (_status_kib(pid, "VmHWM") or 0) / 1024


def open_file_mib(pid: int, text: str) -> float:
    """Allocated MiB of the files `pid` holds open whose path contains `text`; 0 if gone.

    Deleted files count; a file open several times (one database, several
    connections) counts once.
    """
    sizes: dict[tuple[int, int], int] = {}
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return 0.0
    for fd in fds:
        try:
            if text in os.readlink(fd):
                st = os.stat(fd)  # follows the link, deleted or not
                sizes[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        except OSError:
            continue  # closed meanwhile
    return sum(sizes.values()) / (1 << 20)


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Waits until every process in `pids` has ended, told by the kernel (a pidfd
    each: no polling); returns those still alive after `timeout` seconds."""
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    try:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        waiting = set(fds)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                waiting.discard(fd)
        return sorted(fds[fd] for fd in waiting)
    finally:
        for fd in fds:
            os.close(fd)


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline")).read_bytes().decode(errors="replace")
    except OSError:
        return ""


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (this one excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if text in _cmdline(pid) and alive(pid):
            found.append(pid)
    return found


def children(parent: int) -> list[int]:
    """Live (non-zombie) direct children of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # Field 4 (ppid) is index 1 once the state field is index 0.
        if fields is not None and int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def live_children() -> list[int]:
    """Live (non-zombie) direct children of this process."""
    return children(os.getpid())


def leftovers(root: Path) -> list[str]:
    """`pid: command line` of every process the benchmark may have left behind."""
    pids = sorted(set(pids_mentioning(str(root))) | set(live_children()))
    return [f"{pid}: {_cmdline(pid).replace(chr(0), ' ').strip()}" for pid in pids]
