"""Ranges of numeric flags, checked before a command reads or runs anything:
`ehft train: error: --batch-size 0: expected an integer >= 1`, exit status 2."""

import math

from ..errors import EhftError

POSITIVE_INT = (lambda v: v >= 1, "an integer >= 1")
SEED = (lambda v: v >= 0, "an integer >= 0")
POSITIVE = (lambda v: v > 0, "a number > 0")
SHARE = (lambda v: 0 < v < 1, "a number strictly between 0 and 1")
WARMUP_SHARE = (lambda v: 0 <= v < 1, "a number with 0 <= ratio < 1")


def check(args, ranges):
    """`ranges`: {dest: (test, what is expected)}; None (not given) passes."""
    for dest, (ok, expected) in ranges.items():
        values = getattr(args, dest, None)
        for value in values if isinstance(values, list) else [values]:
            if value is None:
                continue
            if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
                raise EhftError("--%s %s: expected %s" % (dest.replace("_", "-"), value,
                                                          expected))
