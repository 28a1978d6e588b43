"""The `attnlab` command: one argparse tree assembled from each layer's own CLI module.

Each module in COMMAND_MODULES exposes `add_commands(subparsers)`; it registers its sub-commands
and sets `func` (a callable taking the parsed args and returning an exit code) on each. Those
modules import only light things at top level, so `attnlab jobs list` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# In layer order (docs/contracts.md): training (train, demo, registry, data) -> tuning (tune) -> service.
COMMAND_MODULES = [
    "training.cli",
    "training.data_check",
    "tuning.cli",
    "service.commands",
    "service.user_commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnlab",
        description="Train, search and serve Non-local, SE and self-attention blocks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
