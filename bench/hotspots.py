"""Sum py-spy collapsed stacks (bench/harness.py `profiled`) by project frame: where the
`norn serve` process spends its samples, as shares of all samples.

    .venv/bin/python bench/hotspots.py <file.txt> [--top 40] [--match relay]

Inclusive share per function (a function counts once per stack however deep it recurses),
and the share of stacks whose leaf is in each top-level package (own time)."""

from __future__ import annotations

import argparse
import re
from collections import Counter

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:]+):\d+\)$")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="", help="only functions whose file holds this")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in open(args.file):
        stack, _, count = line.rstrip().rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        seen = set()
        for frame in frames:
            m = FRAME.match(frame)
            if not m or args.match not in m["file"]:
                continue
            key = f"{m['func']} ({m['file']})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
        m = FRAME.match(frames[-1])
        leaf[m["file"].split("/")[0] if m else frames[-1]] += n
    print(f"{total} samples")
    for key, n in inclusive.most_common(args.top):
        print(f"{n / total:6.1%}  {key}")
    print("-- own time by leaf file's first path part")
    for key, n in leaf.most_common(15):
        print(f"{n / total:6.1%}  {key}")


if __name__ == "__main__":
    main()
