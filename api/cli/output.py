"""Terminal output shared by the `colony` commands."""

import sys
from typing import NoReturn

from rich.console import Console

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error and exit with `code`."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)
