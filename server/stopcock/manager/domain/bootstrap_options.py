"""The bootstrap options of a start, as Feldera's `BootstrapConfig` (no I/O).

`POST /start?bootstrap_policy=&silent_bootstrap=&concurrent_bootstrap=`
fixes them for the deployment; the runtime follows the policy when it
restores a checkpoint of another program (runtime/bootstrap.py). Feldera
(crates/feldera-types/src/runtime_status.rs, db/operations/pipeline.rs):
  * the policy defaults to `await_approval`;
  * `silent_bootstrap` and `concurrent_bootstrap` are mutually exclusive
    (400 InvalidBootstrapConfig);
  * while the pipeline is not stopped, a start with other options is refused
    (400 BootstrapPolicyImmutableUnlessStopped);
  * `initial=standby` needs a file storage backend with `sync` configured
    (400 InitialStandbyNotAllowed otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stopcock.manager.domain import errors
from stopcock.manager.domain.model import PipelineRecord

POLICIES = ("allow", "reject", "await_approval")
DEFAULT_POLICY = "await_approval"


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    policy: str = DEFAULT_POLICY
    silent: bool = False
    concurrent: bool = False

    @classmethod
    def parse(cls, policy: str, silent: bool, concurrent: bool) -> BootstrapOptions:
        """The options of a start request; 400 for a bad value or combination."""
        policy = policy or DEFAULT_POLICY
        if policy not in POLICIES:
            allowed = ", ".join(f"`{p}`" for p in POLICIES)
            raise errors.bad_request(
                "InvalidRequest",
                f"Query deserialize error: unknown variant `{policy}`, expected one of {allowed}",
                {"parameter": "bootstrap_policy", "value": policy, "allowed": list(POLICIES)},
            )
        if silent and concurrent:
            raise errors.bad_request(
                "InvalidBootstrapConfig",
                "Invalid bootstrap configuration: `silent_bootstrap` and `concurrent_bootstrap` "
                "are mutually exclusive; set at most one",
                {
                    "reason": "`silent_bootstrap` and `concurrent_bootstrap` are mutually "
                    "exclusive; set at most one"
                },
            )
        return cls(policy, silent, concurrent)

    def changes(self) -> dict[str, Any]:
        """The record fields a start sets."""
        return {
            "bootstrap_policy": self.policy,
            "silent_bootstrap": self.silent,
            "concurrent_bootstrap": self.concurrent,
        }


def check_unchanged(rec: PipelineRecord, options: BootstrapOptions) -> None:
    """Refuses other options than the deployment's while it is not stopped."""
    if rec.bootstrap_policy is None:
        return
    current = BootstrapOptions(rec.bootstrap_policy, rec.silent_bootstrap, rec.concurrent_bootstrap)
    if current != options:
        raise errors.precondition(
            "BootstrapPolicyImmutableUnlessStopped",
            "Bootstrap policy cannot be changed unless the pipeline is desired to become Stopped.",
        )


def check_standby(rec: PipelineRecord) -> None:
    """`initial=standby`: Feldera's requirement, then Stopcock's lack of standby.

    Standby follows a checkpoint that another pipeline pushes to object
    storage; Feldera allows it only with a file storage backend whose `sync`
    is configured. Stopcock refuses the same starts with the same error, and
    answers the others 405: it has no object storage sync to follow.
    """
    storage = rec.runtime_config.get("storage")
    backend = storage.get("backend") if isinstance(storage, dict) else None
    backend = backend if isinstance(backend, dict) else {}
    config = backend.get("config")
    is_file = backend.get("name") == "file"
    has_sync = isinstance(config, dict) and config.get("sync") is not None
    if not (is_file and has_sync):
        raise errors.precondition(
            "InitialStandbyNotAllowed",
            "Initial desired runtime status can only be set to Standby if: (1) "
            "`runtime_config.storage.backend.name` is set to `file`, and (2) "
            "`runtime_config.storage.backend.config.sync` is configured.",
        )
    raise errors.unsupported_action(
        "/start?initial=standby",
        "Stopcock has no standby: it does not follow checkpoints synchronized to object storage",
    )
