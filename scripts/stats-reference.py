#!/usr/bin/env python3
"""Reference numbers for src/analysis/stats.rs, computed independently with scipy / statsmodels / lifelines.

Writes tests/fixtures/stats/reference.json (the Rust unit tests compare against it; CI needs no Python).
Regenerate after changing the fixed data below:

    python3 -m venv /tmp/venv-stats && /tmp/venv-stats/bin/pip install scipy statsmodels lifelines
    /tmp/venv-stats/bin/python scripts/stats-reference.py > tests/fixtures/stats/reference.json
"""

import json
import math

import lifelines
import numpy as np
import scipy
import statsmodels
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times
from scipy.stats import fisher_exact
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize


def num(x):
    """10 significant digits; infinity as the string "inf" (JSON has no infinity)."""
    x = float(x)
    return "inf" if math.isinf(x) else float(f"{x:.10g}")


# Fixed data: turns of the first break (event 1) or the last turn of a conversation that never broke (event 0).
SETS = [
    {"times": [3, 5, 5, 8, 10, 12, 12, 15, 18, 20, 20, 24, 30, 30, 30],
     "events": [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0]},
    {"times": [10, 14, 18, 22, 25, 28, 30, 30, 30, 30, 30, 30],
     "events": [1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0]},
    {"times": [1, 2, 2, 3, 4, 4, 5, 6, 7, 8], "events": [1, 1, 1, 1, 1, 0, 1, 1, 1, 1]},
]

out = {"generated_by": "scripts/stats-reference.py",
       "versions": {"scipy": scipy.__version__, "statsmodels": statsmodels.__version__,
                    "lifelines": lifelines.__version__, "numpy": np.__version__}}

out["wilson"] = []
for k, n in [(8, 50), (0, 20), (20, 20), (1, 3), (16, 100), (37, 64)]:
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    out["wilson"].append({"k": k, "n": n, "low": num(lo), "high": num(hi)})

out["fisher"] = []
for table in [(8, 42, 12, 38), (0, 20, 5, 15), (3, 1, 1, 3), (10, 10, 10, 10), (1, 49, 15, 35), (0, 0, 3, 4)]:
    a, b, c, d = table
    _, p = fisher_exact([[a, b], [c, d]], alternative="two-sided")
    out["fisher"].append({"table": list(table), "p": num(p)})

out["logrank"] = []
for i, j in [(0, 1), (0, 2), (1, 2)]:
    r = logrank_test(SETS[i]["times"], SETS[j]["times"], SETS[i]["events"], SETS[j]["events"])
    out["logrank"].append({"a": SETS[i], "b": SETS[j], "statistic": num(r.test_statistic), "p": num(r.p_value)})

out["kaplan_meier"] = []
for s in SETS:
    kmf = KaplanMeierFitter().fit(s["times"], s["events"])  # default alpha 0.05, log-log Greenwood band
    ci = kmf.confidence_interval_
    curve = [{"time": num(t), "survival": num(kmf.survival_function_.loc[t].iloc[0]),
              "low": num(ci.loc[t].iloc[0]), "high": num(ci.loc[t].iloc[1])} for t in kmf.timeline]
    med = median_survival_times(ci)
    out["kaplan_meier"].append({**s, "curve": curve, "median": {
        "estimate": num(kmf.median_survival_time_), "low": num(med.iloc[0, 0]), "high": num(med.iloc[0, 1])}})

out["holm"] = []
for p in [[0.01, 0.04, 0.03, 0.005], [0.2, 0.5, 0.01], [0.001, 0.001, 0.9, 0.04, 0.02]]:
    out["holm"].append({"p": p, "adjusted": [num(x) for x in multipletests(p, alpha=0.05, method="holm")[1]]})

out["sample_size"] = []
for p1, p2 in [(0.16, 0.25), (0.1, 0.3), (0.5, 0.6), (0.05, 0.5), (0.9, 0.7)]:
    n = NormalIndPower().solve_power(effect_size=proportion_effectsize(p1, p2), alpha=0.05, power=0.8, ratio=1.0)
    out["sample_size"].append({"p1": p1, "p2": p2, "n_exact": num(n), "n": math.ceil(n)})

print(json.dumps(out, indent=1))
