"""More differential cases than CI runs: vulnattest, the Kyverno CLI and cosign judging generated `.att` tags.

    python bench/differential.py --cases 2000

Runs the differential test (`tests/differential/test_admission_parity.py`) with N generated cases (the same
fixed seed: the first 300 are CI's), against the oracles built by `python -m tests.oracles build`. Prints pytest's
report, then ``RESULT cases=<n> seconds=<s> cases_per_s=<x> passed=<true|false>``; exits as pytest exits.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="generated cases (default 1000)")
    args = parser.parse_args()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/differential/test_admission_parity.py::test_vulnattest_kyverno_and_cosign_agree_on_generated_attestations"],
        cwd=ROOT, env={**os.environ, "VULNATTEST_DIFFERENTIAL_CASES": str(args.cases)}, check=False,
    )
    seconds = time.monotonic() - started
    print(f"RESULT cases={args.cases} seconds={seconds:.1f} cases_per_s={args.cases / seconds:.2f} "
          f"passed={'true' if done.returncode == 0 else 'false'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
