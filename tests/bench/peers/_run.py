"""`python -m tests.bench.peers._run MODULE PHASE [--resume]`: one framework's process.

The framework lives in its own module (not `__main__`) so that Temporal's workflow
sandbox can import its workflow classes by name.
"""

import importlib
import sys

from tests.bench.peers._common import main

if __name__ == "__main__":
    module = importlib.import_module(f"tests.bench.peers.{sys.argv.pop(1)}")
    main(module.FRAMEWORK)
