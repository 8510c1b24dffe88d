"""The statistics of a report: mean and spread over seeds, Welch's test, the interval of an Avg
difference and the smallest difference a grid can detect, and the paper's gains."""

import math

def mean_std(values):
    """Mean and sample standard deviation (n - 1); std is None for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def mean_interval(values, level=0.95):
    """Mean of `values` and the Student's t interval of that mean at `level` ((low, high);
    None for a single value)."""
    mean, std = mean_std(values)
    if std is None:
        return mean, None
    from scipy.stats import t

    half = t.ppf(0.5 + level / 2, len(values) - 1) * std / math.sqrt(len(values))
    return mean, (mean - half, mean + half)


def welch_p(a, b):
    """Two-sided p of Welch's t-test between two lists of per-seed values; None when either
    side has fewer than two seeds or neither varies (no test possible)."""
    return welch_p_of_cells(_cell(a), _cell(b))


def welch_p_of_cells(a, b):
    """The same test from two summary cells ({"mean", "std", "seeds"}, as in X.json), for
    comparisons made from reports rather than from runs."""
    if min(a["seeds"], b["seeds"]) < 2 or not (a["std"] or b["std"]):
        return None
    from scipy.stats import ttest_ind_from_stats

    return float(ttest_ind_from_stats(a["mean"], a["std"], a["seeds"], b["mean"], b["std"],
                                      b["seeds"], equal_var=False).pvalue)


def _cell(values):
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "seeds": len(values)}


def _avg_difference_spread(summary, method, baseline):
    """(standard error, Welch–Satterthwaite degrees of freedom) of the Avg difference method −
    baseline: the Avg is a mean over columns of per-column means, so its variance is the sum of
    the cells' s²/n over columns². None when a column lacks a cell or a cell has fewer than two
    seeds (no spread to go on), or when no cell varies."""
    parts = []  # (variance of a cell's mean, its seeds) for every cell in the Avg
    for column in summary.columns:
        for m in (method, baseline):
            cell = summary.cells.get((column, m))
            if cell is None or cell["std"] is None:
                return None
            parts.append((cell["std"] ** 2 / len(cell["values"]), len(cell["values"])))
    spread = sum(v for v, _ in parts)
    if spread == 0:
        return None
    freedom = spread ** 2 / sum(v ** 2 / (n - 1) for v, n in parts)
    return math.sqrt(spread) / len(summary.columns), freedom


def avg_difference_interval(summary, method, baseline, level=0.95):
    """(low, high) of the Avg difference method − baseline, or None (see above)."""
    spread = _avg_difference_spread(summary, method, baseline)
    if spread is None:
        return None
    from scipy.stats import t

    half = t.ppf(0.5 + level / 2, spread[1]) * spread[0]
    diff = summary.avg[method]["mean"] - summary.avg[baseline]["mean"]
    return diff - half, diff + half


def detectable_difference(summary, method, baseline, power=0.8, level=0.95):
    """The smallest Avg difference the grid would find beyond seed noise (two-sided test at
    1 − level) with probability `power`, at its seeds and their spread: (t₁₋α/₂ + t_power) · SE
    with the interval's degrees of freedom. None where the interval is."""
    spread = _avg_difference_spread(summary, method, baseline)
    if spread is None:
        return None
    from scipy.stats import t

    return (t.ppf(0.5 + level / 2, spread[1]) + t.ppf(power, spread[1])) * spread[0]


def paper_gains(published, columns, baseline):
    """method -> its published gain over `baseline` on these columns: the mean over them of
    (method − baseline) in the first published table that has both on every one."""
    gains = {}
    for table in published:
        rows = {r["method"]: r for r in table["rows"] if r.get("method")}
        base = rows.get(baseline)
        if base is None or not columns:
            continue
        for method, row in rows.items():
            if method == baseline or method in gains:
                continue
            if all(c in row["values"] and c in base["values"] for c in columns):
                gains[method] = sum(row["values"][c] - base["values"][c]
                                    for c in columns) / len(columns)
    return gains


def published_row(method, gains):
    """The row of `gains` that gives `method` its paper's gain: its own name, or for a method
    written with arguments (ehft-lora(r=8,alpha=16), mixout(p=0.7)) the row of the method
    without them, which the verdict names; None when neither is published."""
    if method in gains:
        return method
    base = method.split("(", 1)[0].strip()
    return base if base != method and base in gains else None


def p_text(p):
    """Two decimals, or two significant digits below 0.01 (where "0.00" would hide how small)."""
    return "n/a" if p is None else "p %.2f" % p if p >= 0.01 else "p %.1e" % p
