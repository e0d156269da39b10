"""A runtime obeys no owner older than the newest it has seen (epoch fencing).

Real runtime processes, started here directly (as the manager's runner does:
a spec in the run directory, a ready pipe) and called with their secret. A
call may carry `x-stopcock-epoch`; SetDesiredStatus must. A lower epoch than
the highest seen is refused ABORTED / 409 StaleOwner; a higher one is
recorded in the run directory's `epoch` file before the call is handled, so
a runtime started anew there still refuses what this one refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import grpc
import pytest
from stopcock.contract import error_codec
from stopcock.contract.fencing import EPOCH_FILE, EPOCH_METADATA
from stopcock.contract.runtime_spec import PROTOCOL, RuntimeSpec
from stopcock.internal.v1 import runtime_service_pb2 as rpb
from stopcock.internal.v1 import runtime_service_pb2_grpc as rpb_grpc
from stopcock.manager.control.runtime_client import RuntimeClient, is_fenced
from stopcock.manager.domain.errors import ApiError

from tests.support import PROGRAM, WAIT
from tests.test_runtime_door import CALLS

pytestmark = pytest.mark.e2e

Metadata = tuple[tuple[str, str], ...]
State: TypeAlias = rpb.RuntimeState.ValueType
PAUSED = rpb.RUNTIME_STATE_PAUSED
RUNNING = rpb.RUNTIME_STATE_RUNNING


@dataclass
class Runtime:
    run_dir: Path
    token: str
    process: subprocess.Popen[bytes]
    port: int
    channel: grpc.Channel

    @property
    def stub(self) -> rpb_grpc.RuntimeServiceStub:
        return rpb_grpc.RuntimeServiceStub(self.channel)

    def md(self, epoch: int | str | None = None, token: str | None = None) -> Metadata:
        pairs = (("x-stopcock-runtime-token", self.token if token is None else token),)
        return pairs if epoch is None else (*pairs, (EPOCH_METADATA, str(epoch)))

    def set_desired(self, state: State, epoch: int | str | None) -> None:
        self.stub.SetDesiredStatus(
            rpb.SetDesiredStatusRequest(desired_state=state), metadata=self.md(epoch), timeout=WAIT
        )

    def watch(self, epoch: int | None = None) -> Any:
        """A status stream; Any: grpc-stubs types neither its `next` nor its `cancel`."""
        return self.stub.WatchStatus(
            rpb.WatchStatusRequest(), metadata=self.md(epoch), timeout=WAIT
        )

    def report(self) -> rpb.WatchStatusResponse:
        """The runtime's current status (the first report of a stream without an epoch)."""
        stream = self.watch()
        try:
            report: rpb.WatchStatusResponse = next(stream)
            return report
        finally:
            stream.cancel()

    def wait_state(self, state: State) -> None:
        stream = self.watch()
        try:
            for report in stream:
                if report.state == state:
                    return
        finally:
            stream.cancel()

    def recorded_epoch(self) -> str:
        return (self.run_dir / EPOCH_FILE).read_text()

    def kill(self) -> None:
        self.channel.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WAIT)


class Launch(Protocol):
    def __call__(self, epoch: int, run_dir: str = "run") -> Runtime: ...


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Starts a runtime whose spec holds `epoch`, in tmp_path/`run_dir`, and waits till it runs."""
    started: list[Runtime] = []

    def start(epoch: int, run_dir: str = "run") -> Runtime:
        directory = tmp_path / run_dir
        directory.mkdir(mode=0o700, exist_ok=True)
        token = secrets.token_urlsafe(32)
        RuntimeSpec(
            pipeline_id="p",
            pipeline_name="fenced",
            deployment_id=secrets.token_hex(8),
            program_code=PROGRAM,
            runtime_config={"storage": {}},
            initial="Running",
            storage_dir=str(tmp_path / "storage"),
            runtime_token=token,
            protocol=PROTOCOL,
            epoch=epoch,
        ).write(directory)
        read_fd, write_fd = os.pipe()
        with open(directory / "runtime.log", "ab") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "stopcock.runtime.main"),
                    *("--run-dir", str(directory), "--ready-fd", str(write_fd)),
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as ready, selectors.DefaultSelector() as sel:
            sel.register(ready, selectors.EVENT_READ)
            assert sel.select(WAIT), "the runtime did not become ready"
            line = ready.readline()  # the port, or nothing if the runtime died
        assert line, (directory / "runtime.log").read_text()
        port = int(line)
        runtime = Runtime(
            directory, token, process, port, grpc.insecure_channel(f"127.0.0.1:{port}")
        )
        started.append(runtime)
        runtime.wait_state(RUNNING)
        return runtime

    yield start
    for runtime in started:
        runtime.kill()


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def assert_stale(exc: Any, epoch: int, highest: int) -> None:
    message = (
        f"fenced: this runtime has seen owner epoch {highest}; "
        f"a command with epoch {epoch} comes from a stale owner"
    )
    assert exc.code() == grpc.StatusCode.ABORTED
    assert exc.details() == message
    assert error_codec.decode(exc.trailing_metadata()) == error_codec.ErrorBody(
        409, "StaleOwner", message, {"epoch": epoch, "highest_epoch": highest}
    )


def test_set_desired_status_obeys_its_owners_epoch_or_a_newer_one(launch: Launch) -> None:
    runtime = launch(epoch=3)
    runtime.set_desired(PAUSED, epoch=3)  # the spawning owner's own epoch
    runtime.wait_state(PAUSED)
    assert not (runtime.run_dir / EPOCH_FILE).exists()  # nothing above the spec's yet

    runtime.set_desired(RUNNING, epoch=5)  # a newer owner: recorded, then obeyed
    runtime.wait_state(RUNNING)
    assert runtime.recorded_epoch() == "5\n"
    assert stat.S_IMODE((runtime.run_dir / EPOCH_FILE).stat().st_mode) == 0o600

    for stale in (4, 3, 0):
        assert_stale(refused(lambda e=stale: runtime.set_desired(PAUSED, e)), stale, 5)
    assert runtime.report().desired_state == RUNNING  # the stale commands changed nothing
    assert runtime.recorded_epoch() == "5\n"
    runtime.set_desired(PAUSED, epoch=5)
    runtime.wait_state(PAUSED)


def test_set_desired_status_needs_a_well_formed_epoch(launch: Launch) -> None:
    runtime = launch(epoch=0)
    stub = runtime.stub
    request = rpb.SetDesiredStatusRequest(desired_state=PAUSED)
    bad: list[Metadata] = [
        runtime.md(),  # only the owner's actor commands, and it sends its epoch
        *(runtime.md(text) for text in ("abc", "-1", "1.5", " 2", "", "99999999999999999999")),
        (*runtime.md(1), (EPOCH_METADATA, "2")),
    ]
    for metadata in bad:
        exc = refused(lambda md=metadata: stub.SetDesiredStatus(request, metadata=md))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, metadata
        assert EPOCH_METADATA in (exc.details() or "")
    # Without the secret, the epoch is not even looked at: it cannot raise the fence.
    for epoch in ("9", "abc"):
        exc = refused(lambda e=epoch: stub.SetDesiredStatus(request, metadata=runtime.md(e, "x")))
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not (runtime.run_dir / EPOCH_FILE).exists()
    assert runtime.report().desired_state == RUNNING
    # Data calls may come without an epoch, but not with a malformed one.
    exc = refused(lambda: CALLS["GetCheckpointStatus"](stub, runtime.md("x1")))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_data_calls_need_no_epoch_but_a_stale_one_is_refused(launch: Launch) -> None:
    runtime = launch(epoch=2)
    runtime.set_desired(RUNNING, epoch=4)
    stub = runtime.stub
    data_calls = {name: call for name, call in CALLS.items() if name != "SetDesiredStatus"}
    # Any replica relays users' calls: without an epoch they are not fenced.
    for name, call in data_calls.items():
        assert call(stub, runtime.md()) is not None, name
    for name, call in data_calls.items():
        assert call(stub, runtime.md(4)) is not None, name
    # A stale owner is refused on every method, before the handler runs.
    for call in CALLS.values():
        assert_stale(refused(lambda c=call: c(stub, runtime.md(3))), 3, 4)
    assert [row for row in CALLS["Query"](stub, runtime.md()) if row.ndjson]


def test_a_raised_epoch_outlives_the_runtime_that_saw_it(launch: Launch) -> None:
    first = launch(epoch=1)
    first.set_desired(RUNNING, epoch=7)
    first.kill()
    # A runtime started anew in the same run directory, by an owner whose spec
    # holds an older epoch than the one the first runtime recorded.
    second = launch(epoch=2)
    assert second.recorded_epoch() == "7\n"
    assert_stale(refused(lambda: second.set_desired(PAUSED, epoch=5)), 5, 7)
    second.set_desired(PAUSED, epoch=7)
    second.wait_state(PAUSED)
    second.kill()
    # A spec above the file wins: the file is a floor, not the value.
    third = launch(epoch=9)
    assert_stale(refused(lambda: third.set_desired(RUNNING, epoch=8)), 8, 9)


def test_a_stale_owner_stops_hearing_reports(launch: Launch) -> None:
    runtime = launch(epoch=1)
    owned = runtime.watch(epoch=1)
    relayed = runtime.watch()
    try:
        assert next(owned).state == RUNNING
        assert next(relayed).state == RUNNING
        runtime.set_desired(PAUSED, epoch=2)  # another replica has taken the pipeline over

        def drain() -> None:
            for _ in owned:
                pass

        assert_stale(refused(drain), 1, 2)
        # The stream without an epoch goes on: it hears the new owner's pause.
        assert any(report.state == PAUSED for report in relayed)
        assert_stale(refused(lambda: next(runtime.watch(epoch=1))), 1, 2)
    finally:
        owned.cancel()
        relayed.cancel()


async def test_the_managers_client_sends_its_epoch(launch: Launch) -> None:
    runtime = launch(epoch=3)
    owner = RuntimeClient(runtime.port, "fenced", runtime.token, epoch=4)
    stale = RuntimeClient(runtime.port, "fenced", runtime.token, epoch=3)
    unleased = RuntimeClient(runtime.port, "fenced", runtime.token)
    wrong = RuntimeClient(runtime.port, "fenced", "not-the-secret", epoch=4)
    try:
        await owner.set_desired("Paused")
        assert runtime.recorded_epoch() == "4\n"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stale.set_desired("Running")
        assert is_fenced(info.value)
        # A manager without a lease commands as epoch 0: below any owner's.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unleased.set_desired("Running")
        assert is_fenced(info.value)
        # A user's call through a stale owner: the pipeline is changing owner,
        # a moment's 503 in the contract's shape, not the internal 409.
        with pytest.raises(ApiError) as refusal:
            await stale.checkpoint_status()
        err = refusal.value
        assert (err.http_status, err.error_code, err.grpc_code) == (
            503,
            "PipelineInteractionUnreachable",
            "UNAVAILABLE",
        )
        assert err.details is not None
        assert err.details["request"] == "checkpoint_status"
        assert "changing owner" in err.details["error"]
        with pytest.raises(ApiError, match="changing owner"):
            async for _ in stale.query("SELECT * FROM t"):
                pass
        # Data calls without an epoch are relayed unfenced.
        assert (await unleased.checkpoint_status()).incarnation_uuid
        # Other refusals are not fencing.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await wrong.set_desired("Running")
        assert not is_fenced(info.value)
    finally:
        for client in (owner, stale, unleased, wrong):
            await client.close()
