"""Payloads of run workspaces on tools hosts (activities/tools/workspace_host.py)."""

from core.payloads import Payload


class WorkspaceInput(Payload):
    """Input of `claim_workspace` and `release_workspace`: one run's workspace."""

    tenant_id: str
    run_id: str


class WorkspaceHost(Payload):
    """The tools host holding a run's workspace (`claim_workspace`'s answer).

    Its workers poll `workspace_host_queue(<tools queue>, host_id)`; a call waits `wait_s`
    for one of them to pick it up before the workspace counts as lost.
    """

    host_id: str
    wait_s: float = 20.0
