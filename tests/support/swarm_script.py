"""Scripting the model server for swarms: the queen's plans, each subtask's answers, the synthesis.

Subtasks run at once, so one queue of steps cannot say which request gets which answer.
`SwarmScript` is a responder that reads each request: the queen's plan requests get the
scripted plans in order, a subtask's run gets that subtask's steps (found by the
"Your subtask (ID)" line of its objective), the synthesis gets its answer.
"""

import json
import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support.model_server import RecordedRequest, ScriptedModelServer, Step, reply

PLAN_MARKER = "Split the objective into subtasks"
SYNTHESIS_MARKER = "Write the final answer to the objective"
SUMMARY_MARKER = "Summarize this result of a subtask"
_SUBTASK = re.compile(r"Your subtask \(([A-Za-z0-9_-]+)\)")


def subtask(
    id: str,
    role: str = "researcher",
    depends_on: Iterable[str] = (),
    complexity: str = "medium",
    description: str | None = None,
) -> dict[str, Any]:
    """One subtask of a plan (a dict as the queen or a user writes it)."""
    return {
        "id": id,
        "description": description or f"Do part {id} of the work.",
        "role": role,
        "depends_on": list(depends_on),
        "expected_output": f"the result of {id}",
        "complexity": complexity,
    }


def plan_json(*subtasks: dict[str, Any]) -> str:
    """A queen's answer holding `subtasks`."""
    return json.dumps({"subtasks": list(subtasks)})


def kind_of(request: RecordedRequest) -> tuple[str, str | None]:
    """("plan" | "synthesis" | "summary" | "subtask" | "other", subtask id)."""
    messages = request.messages
    system = str(messages[0].get("content") or "") if messages else ""
    if PLAN_MARKER in system:
        return "plan", None
    if SYNTHESIS_MARKER in system:
        return "synthesis", None
    if SUMMARY_MARKER in system:
        return "summary", None
    for message in messages:
        if message.get("role") == "user":
            found = _SUBTASK.search(str(message.get("content") or ""))
            return ("subtask", found.group(1)) if found else ("other", None)
    return "other", None


@dataclass
class SwarmScript:
    """A responder for `ScriptedModelServer` (see the module docstring).

    `plans`: the queen's answers, in order (text is sent as the reply). `subtasks`:
    steps per subtask id, one per model call of its runs; when they run out (or for an
    unnamed subtask) the answer is `result of <id>` after `delay` seconds.
    """

    plans: list[str | Step] = field(default_factory=list)
    subtasks: Mapping[str, list[Step]] = field(default_factory=dict)
    synthesis: str = "The final answer, from [a]."
    delay: float = 0.0
    _queues: dict[str, deque[Step]] = field(init=False)
    _plans: deque[str | Step] = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._queues = {k: deque(v) for k, v in self.subtasks.items()}
        self._plans = deque(self.plans)

    def __call__(self, request: RecordedRequest) -> Step | None:
        kind, sid = kind_of(request)
        with self._lock:
            if kind == "plan":
                if not self._plans:
                    return None
                step = self._plans.popleft()
                return reply(step) if isinstance(step, str) else step
            if kind == "synthesis":
                return reply(self.synthesis)
            if kind == "summary":
                return reply("A short summary of a long result.")
            if kind == "subtask" and sid is not None:
                queue = self._queues.get(sid)
                if queue:
                    return queue.popleft()
                return reply(f"result of {sid}", delay=self.delay)
        return None

    def install(self, server: ScriptedModelServer) -> "SwarmScript":
        """Make this the server's responder."""
        server.responder = self
        return self


def requests_for(
    server: ScriptedModelServer, kind: str, sid: str | None = None
) -> list[RecordedRequest]:
    """The chat requests of one kind (and subtask)."""
    return [r for r in server.chat_requests() if kind_of(r) == (kind, sid)]
