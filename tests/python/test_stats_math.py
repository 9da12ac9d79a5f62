"""parchgrad/stats_math against scipy 1.10, through the stats_probe tool.

- Shapiro-Wilk, default (Scipy110) mode, against scipy.stats.shapiro on normal, uniform,
  exponential, tied (rounded) and constant samples of n = 3 ... 20000: within 1e-4 relative
  or 1e-7 absolute (observed: bitwise equal).
- Shapiro-Wilk, Double mode, against a float64 evaluation of the same formulas written here
  with numpy/scipy.special (tight), and against scipy for n <= 50 (1e-4); for larger n the
  gap to scipy's single-precision result is only reported.
- One-sided t-tests (Student and Welch) against scipy.stats.ttest_ind(alternative="greater"),
  including the NaN / 0 / 1 special cases.
- Class-vs-rest p-values from merged per-class moments against ttest_ind per class.

Run with `pytest -s` to see the worst errors; a JSON summary goes to $PARCHGRAD_SCRATCH.
"""
import json
import math
import os
import subprocess
import warnings

import numpy as np
import pytest
from scipy import special, stats

SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("PARCHGRAD_BIN") or os.path.join(SRC, "build", "parchgrad")
PROBE = os.environ.get("PARCHGRAD_STATS_PROBE") or os.path.join(
    os.path.dirname(BIN), "tests", "tools", "stats_probe")
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(PROBE):
    raise RuntimeError(f"stats_probe not found at {PROBE} (is the build complete?)")
pytestmark = pytest.mark.skipif(not os.path.exists(PROBE), reason="stats_probe not built")

SCRATCH = os.environ.get("PARCHGRAD_SCRATCH") or os.path.join(
    SRC, "build", "test_scratch", "test_stats_math")
os.makedirs(SCRATCH, exist_ok=True)

REL, ABS = 1e-4, 1e-7
SIZES = [3, 4, 5, 11, 20, 50, 500, 5000, 20000]
KINDS = ["normal", "uniform", "exponential", "ties", "constant"]

# Worst errors per check, filled by the tests and written out at the end.
SUMMARY = {}


def note(key, got, want):
    """Record |got - want| (absolute, and relative where |want| > ABS)."""
    s = SUMMARY.setdefault(key, {"count": 0, "max_abs": 0.0, "max_rel": 0.0, "bitwise": 0})
    s["count"] += 1
    if (math.isnan(got) and math.isnan(want)) or got == want:
        s["bitwise"] += 1
        return
    err = abs(got - want)
    s["max_abs"] = max(s["max_abs"], err)
    if abs(want) > ABS:
        s["max_rel"] = max(s["max_rel"], err / abs(want))


def close(got, want, rel=REL, abs_=ABS):
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    return got == want or abs(got - want) <= abs_ or abs(got - want) <= rel * abs(want)


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    yield
    path = os.path.join(SCRATCH, "stats_math_summary.json")
    with open(path, "w") as f:
        json.dump(SUMMARY, f, indent=1, sort_keys=True)
    print("\nworst errors (abs, rel; bitwise/count):")
    for k, s in sorted(SUMMARY.items()):
        print(f"  {k:34s} {s['max_abs']:.3g} {s['max_rel']:.3g}  {s['bitwise']}/{s['count']}")
    print(f"summary: {path}")


def write(name, values, fmt="%.17g"):
    path = os.path.join(SCRATCH, name)
    np.savetxt(path, np.asarray(values), fmt=fmt)
    return path


def probe(*args):
    r = subprocess.run([PROBE, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [float(t) for t in r.stdout.split()]


def sample(kind, n, rng):
    if kind == "normal":
        return rng.normal(3.0, 2.0, n)
    if kind == "uniform":
        return rng.uniform(-1.0, 5.0, n)
    if kind == "exponential":
        return rng.exponential(0.7, n)
    if kind == "ties":
        return np.round(rng.normal(0.0, 1.0, n), 1)
    return np.full(n, 0.8125)


def shapiro_f64(x):
    """AS R94 in float64 with exact normal quantiles and tail areas (the Double mode)."""
    def poly(c, t):
        r = 0.0
        for ci in reversed(c):
            r = r * t + ci
        return r

    y = np.sort(np.asarray(x, float))
    y = y - np.median(y)
    n = len(y)
    n2 = n // 2
    if n == 3:
        a = np.array([math.sqrt(0.5)])
    else:
        m = special.ndtri((np.arange(1, n2 + 1) - 0.375) / (n + 0.25))
        summ2 = 2.0 * np.sum(m * m)
        ssumm2 = math.sqrt(summ2)
        rsn = 1.0 / math.sqrt(n)
        a1 = poly([0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056], rsn) - m[0] / ssumm2
        if n > 5:
            a2 = -m[1] / ssumm2 + poly([0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633], rsn)
            fac = math.sqrt((summ2 - 2 * m[0] ** 2 - 2 * m[1] ** 2) / (1 - 2 * a1 ** 2 - 2 * a2 ** 2))
            a = -m / fac
            a[0], a[1] = a1, a2
        else:
            fac = math.sqrt((summ2 - 2 * m[0] ** 2) / (1 - 2 * a1 ** 2))
            a = -m / fac
            a[0] = a1
    if y[-1] - y[0] <= 0:
        return 1.0, 1.0
    coef = np.zeros(n)
    coef[:n2] = -a
    coef[n - n2:] = a[::-1]
    ca = coef - coef.mean()
    cx = y / (y[-1] - y[0])
    cx = cx - cx.mean()
    ssa, ssx, sax = ca @ ca, cx @ cx, ca @ cx
    r = math.sqrt(ssa * ssx)
    w1 = (r - sax) * (r + sax) / (ssa * ssx)
    w = 1.0 - w1
    if n == 3:
        return w, max(0.0, 6 / math.pi * (math.asin(math.sqrt(w)) - math.pi / 3))
    ly = math.log(w1)
    if n <= 11:
        g = poly([-2.273, 0.459], n)
        if ly >= g:
            return w, 1e-19
        ly = -math.log(g - ly)
        mu, s = poly([0.544, -0.39978, 0.025054, -6.714e-4], n), math.exp(
            poly([1.3822, -0.77857, 0.062767, -0.0020322], n))
    else:
        ln = math.log(n)
        mu, s = poly([-1.5861, -0.31082, -0.083751, 0.0038915], ln), math.exp(
            poly([-0.4803, -0.082676, 0.0030302], ln))
    return w, float(special.ndtr(-(ly - mu) / s))


def scipy_shapiro(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.shapiro(x)
    return float(r.statistic), float(r.pvalue)


@pytest.mark.parametrize("n", SIZES)
def test_shapiro_matches_scipy(n):
    rng = np.random.default_rng(1000 + n)
    reps = 3 if n <= 5000 else 2
    for kind in KINDS:
        for rep in range(reps if kind != "constant" else 1):
            x = sample(kind, n, rng)
            path = write(f"shapiro_{kind}_{n}_{rep}.txt", x)
            W, P = scipy_shapiro(x)
            w, p = probe("shapiro", path)
            note("shapiro_scipy110_W", w, W)
            note("shapiro_scipy110_p", p, P)
            assert close(w, W) and close(p, P), (kind, n, rep, (w, W), (p, P))
            if kind == "constant":
                assert (w, p) == (1.0, 1.0)

            wd, pd = probe("shapiro", path, "double")
            wr, pr = shapiro_f64(x)
            note("shapiro_double_vs_f64_W", wd, wr)
            note("shapiro_double_vs_f64_p", pd, pr)
            assert close(wd, wr, rel=1e-12, abs_=0) and close(pd, pr, rel=1e-7, abs_=1e-12), (
                kind, n, rep, (wd, wr), (pd, pr))
            key = "small_n" if n <= 50 else "large_n"
            note(f"shapiro_double_vs_scipy_{key}_W", wd, W)
            note(f"shapiro_double_vs_scipy_{key}_p", pd, P)
            assert close(wd, W)
            if n <= 50:  # 1e-6 absolute: scipy's n = 3 p can be -9e-7 where Double gives 0
                assert close(pd, P, abs_=1e-6), (kind, n, rep, pd, P)


def test_shapiro_special_cases():
    cases = [[0.0, 0.0, 1.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [1, 1, 1, 1, 2],
             [1e-30, 2e-30, 0, 0], [1e6 + 1e-3, 1e6, 1e6 - 1e-3, 1e6 + 5e-4], [-3.0, 7.0, 7.0, 7.0]]
    for i, x in enumerate(cases):
        W, P = scipy_shapiro(np.array(x, float))
        w, p = probe("shapiro", write(f"shapiro_special_{i}.txt", x))
        note("shapiro_special", p, P)
        assert close(w, W) and close(p, P), (x, (w, W), (p, P))


def test_shapiro_too_small_is_an_error():
    r = subprocess.run([PROBE, "shapiro", write("shapiro_n2.txt", [1.0, 2.0])],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "at least 3" in r.stderr


def scipy_ttest(a, b, welch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=not welch, alternative="greater").pvalue)


def ttest_pairs():
    rng = np.random.default_rng(5)
    yield "n2_n2", rng.normal(0, 1, 2), rng.normal(0, 1, 2)
    for na, nb in [(3, 5), (20, 20), (50, 5000), (5000, 50), (1000, 49000)]:
        for shift in [-1.0, 0.0, 0.3, 2.0, 8.0]:
            yield f"{na}_{nb}_{shift}", rng.normal(shift, 1.5, na), rng.normal(0, 1, nb)
    # Unequal variances (Welch and Student differ).
    yield "unequal_var", rng.normal(0.5, 5.0, 30), rng.normal(0, 0.2, 300)
    # Large mean, small spread (cancellation in sum-of-squares arithmetic).
    yield "offset", 1e4 + rng.normal(1e-3, 1e-3, 200), 1e4 + rng.normal(0, 1e-3, 300)
    # GAP-like: non-negative, many zeros.
    yield "relu", np.maximum(rng.normal(0.2, 1, 400), 0), np.maximum(rng.normal(0, 1, 4000), 0)
    yield "one_value", np.array([1.0]), rng.normal(0, 1, 5)           # NaN
    yield "const_diff", np.full(4, 2.0), np.full(6, 1.0)               # +inf: p = 0
    yield "const_diff_neg", np.full(4, 1.0), np.full(6, 2.0)           # -inf: p = 1
    yield "const_equal", np.full(4, 1.5), np.full(6, 1.5)              # NaN
    yield "one_const", np.full(5, 1.0), rng.normal(0, 1, 7)


@pytest.mark.parametrize("welch", [False, True], ids=["student", "welch"])
def test_ttest_matches_scipy(welch):
    name = "welch" if welch else "student"
    for label, a, b in ttest_pairs():
        pa, pb = write(f"t_{label}_a.txt", a), write(f"t_{label}_b.txt", b)
        (p,) = probe("ttest", pa, pb, name)
        want = scipy_ttest(a, b, welch)
        note(f"ttest_{name}", p, want)
        assert close(p, want), (label, p, want)


@pytest.mark.parametrize("welch", [False, True], ids=["student", "welch"])
@pytest.mark.parametrize("layout", ["small", "imagenet_like"])
def test_class_vs_rest_matches_scipy(welch, layout):
    name = "welch" if welch else "student"
    rng = np.random.default_rng(11 if layout == "small" else 12)
    if layout == "small":
        # 8 classes; class 5 has one member, class 6 none (both NaN), class 7 all equal.
        sizes = [40, 3, 100, 17, 2, 1, 0, 6]
        labels = np.concatenate([np.full(s, k) for k, s in enumerate(sizes)])
        shift = rng.normal(0, 0.5, len(sizes))
        values = np.maximum(rng.normal(0.3 + shift[labels], 1.0), 0)
        values[labels == 7] = 0.25
    else:
        k, per = 1000, 50
        labels = np.repeat(np.arange(k), per)
        shift = rng.normal(0, 0.3, k)
        values = np.maximum(rng.normal(shift[labels], 1.0), 0).astype(np.float32).astype(float)
    order = rng.permutation(len(labels))
    labels, values = labels[order], values[order]
    got = probe("classrest", write(f"cr_{layout}_values.txt", values),
                write(f"cr_{layout}_labels.txt", labels, fmt="%d"), name)
    assert len(got) == labels.max() + 1
    for k, p in enumerate(got):
        want = scipy_ttest(values[labels == k], values[labels != k], welch)
        note(f"classrest_{name}", p, want)
        assert close(p, want), (k, p, want)
    if layout == "small":
        assert math.isnan(got[5]) and math.isnan(got[6])
