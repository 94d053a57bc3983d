"""`python -m benchmarks`: run the suite and print one Markdown table."""

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import UTC, datetime

from ._harness import Settings, load_average, render
from ._suite import SECTIONS, run, versions


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="durable-jobs benchmarks (Markdown table)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of a few seconds (rough numbers)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    only = tuple(args.only) if args.only else SECTIONS

    started = time.perf_counter()
    print(f"# durable-jobs benchmarks — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print()
    print(f"- {versions()}")
    print(f"- {platform.platform()}, {os.cpu_count()} CPUs, load average before: {load_average()}")
    print("- medians over the repetitions; min-max is the spread of the repetitions")
    print(flush=True)
    sections = asyncio.run(run(settings, only))
    print()
    print(render(sections))
    print()
    print(
        f"Load average after: {load_average()}. Wall time: {time.perf_counter() - started:.1f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
