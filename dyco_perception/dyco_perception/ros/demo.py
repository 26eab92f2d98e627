"""`dyco-demo`: replays the shipped demo bag through the node (being built: see the issues)."""

import sys


def main() -> None:
    sys.exit(
        "dyco-demo: not yet available: the model, the shipped checkpoint and the node are still "
        "being built. The workspace is ready: `source scripts/activate.sh`."
    )
