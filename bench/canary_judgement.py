"""How often the Lambda canary takes back a version, by how it judges: a simulation of its looks at the counts.

    python bench/canary_judgement.py [--runs 400] [--seed 0] [--json]

Both versions call a dependency that fails a share of the calls (25%); the new version fails as often (it should get
in), twice as often, or every time (both should go back, soon). Requests arrive at random, the canary's share to the
new version, each failing at random; the canary looks at the counts each poll, as `CanaryRelease` does, with
`deploykit.watch.failing` itself. Two ways of judging, in the same run: "alone first, 1% a look" (the old version's
counts from the canary's start only, judged alone until they hold 20 requests, each look at 1%: how the canary judged
until it read the minutes before), and "minutes before, shared 1%" (its counts in the ten minutes before added, the 1%
shared out among the looks: how it judges now). Two settings: the README's sandbox walk (25% share, 30 requests a
second, a 20 s bake polled every 0.5 s) and AWS's (10%, 10 a second, 300 s polled every 5 s). It reports the share of
runs taken back and the median time to it. Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploykit.watch import BEFORE_SECONDS, Counts, failing, looks_of

SETTINGS = {  # name → (the canary's share, requests a second, bake seconds, poll seconds)
    "sandbox walk": (0.25, 30.0, 20.0, 0.5),
    "AWS": (0.10, 10.0, 300.0, 5.0),
}
OLD_RATE = 0.25
NEW_RATES = (0.25, 0.5, 1.0)
WAYS = ("alone first, 1% a look", "minutes before, shared 1%")


def taken_back_at(way: str, new_rate: float, setting: tuple[float, float, float, float], rnd: random.Random) -> float:
    """The second the canary takes the new version back, or -1 when it gets in."""
    share, per_second, bake, poll = setting
    now = way == WAYS[1]
    before = Counts()
    if now:
        asked = int(per_second * BEFORE_SECONDS)
        before = Counts(asked, sum(rnd.random() < OLD_RATE for _ in range(asked)))
    looks = looks_of(bake, poll) if now else 1
    new, old, elapsed = Counts(), Counts(), 0.0
    while True:
        if failing(new, old + before, 0.0, looks):
            return elapsed
        if elapsed >= bake:
            return -1.0
        for _ in range(round(per_second * poll)):
            if rnd.random() < share:
                new += Counts(1, int(rnd.random() < new_rate))
            else:
                old += Counts(1, int(rnd.random() < OLD_RATE))
        elapsed += poll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for name, setting in SETTINGS.items():
        for way in WAYS:
            for new_rate in NEW_RATES:
                rnd = random.Random(f"{args.seed}-{name}-{way}-{new_rate}")
                times = [taken_back_at(way, new_rate, setting, rnd) for _ in range(args.runs)]
                back = [t for t in times if t >= 0]
                rows.append(
                    {
                        "setting": name,
                        "judged": way,
                        "new_rate": new_rate,
                        "taken_back": len(back) / len(times),
                        "median_seconds": statistics.median(back) if back else None,
                    }
                )
    if args.json:
        print(json.dumps({"runs": args.runs, "old_rate": OLD_RATE, "rows": rows}, indent=2))
        return
    print(f"{args.runs} runs each; the old version fails {OLD_RATE:.0%} of its calls")
    print(f"{'setting':<13} {'judged':<27} {'new fails':>9} {'taken back':>11} {'median':>8}")
    for row in rows:
        median = f"{row['median_seconds']:.1f} s" if row["median_seconds"] is not None else "-"
        print(
            f"{row['setting']:<13} {row['judged']:<27} {row['new_rate']:>9.0%} {row['taken_back']:>11.1%} {median:>8}"
        )


if __name__ == "__main__":
    main()
