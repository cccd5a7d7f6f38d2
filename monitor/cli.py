"""The ``castwatch`` command. One place maps failures to messages and exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    from monitor import demo

    return demo.run(args.workdir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="castwatch", description="Broadcast copyright monitoring.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="index synthesised recordings and identify a degraded broadcast excerpt")
    p_demo.add_argument("--workdir", type=Path, help="where to write the demo files (default: a new temp dir)")
    p_demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
