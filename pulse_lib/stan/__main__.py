"""``python -m pulse_lib.stan install`` | ``python -m pulse_lib.stan path``."""

from __future__ import annotations

import argparse
import sys
import time

from pulse_lib.errors import ConfigError, SetupError
from pulse_lib.stan import find_existing, install
from pulse_lib.validation import check_integer


def _jobs(text: str) -> int:
    """``--jobs``: a positive integer, refused before anything reaches ``make``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, got {text!r}"
        ) from None
    try:
        return check_integer("--jobs", value, low=1, high=1024)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pulse_lib.stan", description=__doc__
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser(
        "install", help="find, download or build CmdStan (cached in ~/.cmdstan)"
    )
    inst.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help="parallel make jobs (default: all cores)",
    )
    sub.add_parser("path", help="print the CmdStan in use, or exit 1 if there is none")
    args = parser.parse_args(argv)
    if args.command == "path":
        path = find_existing()
        print(
            path if path else "no CmdStan found; run: python -m pulse_lib.stan install"
        )
        return 0 if path else 1
    start = time.perf_counter()
    try:
        path = install(args.jobs)
    except (SetupError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"CmdStan ready at {path} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
