"""`read_output`: a stored message read back by its `colony://` reference, page by page.

The prompt cuts a long tool output and says where the whole text is:
`colony://runs/{run_id}/messages/{seq}` (core/payloads.py `wrap_untrusted`). This tool
reads it, `PAGE_CHARS` characters from `offset`, for runs of the caller's tenant only.
`GET /v1/runs/{id}/messages` serves the same messages to people.
"""

import re
from typing import Any, Final

from activities.tools.framework import BadToolArgumentsError, ToolContext, ToolDefinition
from core.db import Pool
from core.errors import NotFound
from core.runs import store as runs
from core.tools.builtins import OUTPUT_PAGE_CHARS, READ_OUTPUT_TOOL

PAGE_CHARS: Final = OUTPUT_PAGE_CHARS
_REF: Final = re.compile(r"^colony://runs/([A-Za-z0-9_.:-]{1,200})/messages/([0-9]{1,9})$")


def output_tools(pool: Pool) -> list[ToolDefinition]:
    """`read_output`, reading through `pool`."""

    async def read(arguments: dict[str, Any], ctx: ToolContext) -> str:
        ref = str(arguments["ref"]).strip()
        match = _REF.match(ref)
        if match is None:
            raise BadToolArgumentsError(
                f"'{ref[:100]}' is not a reference; copy it from the note, like "
                "colony://runs/run_123/messages/7."
            )
        run_id, seq = match.group(1), int(match.group(2))
        offset = int(arguments.get("offset", 0))
        async with pool.connection() as conn:
            try:
                await runs.get_run(conn, ctx.tenant_id, run_id)
            except NotFound:
                return f"No stored output at {ref}."
            message = await runs.find_message(conn, run_id, seq)
        text = message.content if message is not None else None
        if not text:
            return f"No stored output at {ref}."
        page = text[offset : offset + PAGE_CHARS]
        end = offset + len(page)
        more = f" Next page: offset={end}." if end < len(text) else " This is the end."
        return f"[{ref}: characters {offset}-{end} of {len(text)}.{more}]\n{page}"

    return [ToolDefinition.serving(READ_OUTPUT_TOOL, read)]
