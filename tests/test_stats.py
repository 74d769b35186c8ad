"""The interval routines of sharp_utils.stats cover the known answer about 95 % of the time (synthetic data), and
the verdict rule: held / not held only with the whole interval on one side, a tie inconclusive."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from sharp_utils import stats

REPS = 120  # coverage estimated from this many synthetic data sets: a 95 % routine lands in about [0.89, 0.99]


def _coverage(draw, routine, truth, reps=REPS):
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(reps):
        lo, hi = routine(*draw(rng))
        hits += lo <= truth <= hi
    return hits / reps


def test_rate_ci_is_wilson_and_covers():
    lo, hi = stats.rate_ci(11, 1000)
    p, z, n = 0.011, norm.ppf(0.975), 1000  # Wilson's closed form
    c = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    h = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert (lo, hi) == pytest.approx((c - h, c + h), abs=1e-9)
    cov = _coverage(lambda r: (r.binomial(60, 0.2), 60), stats.rate_ci, 0.2, reps=2000)
    assert 0.92 <= cov <= 0.98
    with pytest.raises(ValueError, match="n must be positive"):
        stats.rate_ci(0, 0)


def test_median_ci_covers_the_true_median():
    kw = dict(n_resamples=400)
    cov = _coverage(lambda r: (r.exponential(2.0, 41),), lambda x: stats.median_ci(x, **kw), 2.0 * np.log(2))
    assert 0.88 <= cov <= 1.0


def test_median_diff_ci_covers_the_true_shift_and_a_constant_gives_a_point():
    kw = dict(n_resamples=400)
    cov = _coverage(lambda r: (r.normal(1.0, 1, 35), r.normal(0.0, 2, 45)),
                    lambda a, b: stats.median_diff_ci(a, b, **kw), 1.0)
    assert 0.88 <= cov <= 1.0
    assert stats.median_diff_ci(np.zeros(5), np.zeros(4)) == (0.0, 0.0)  # a tie is a point at 0: inconclusive
    assert stats.verdict((0.0, 0.0), 0.0, "<", 0) == stats.INCONCLUSIVE


def test_auc_matches_sklearn_with_ties_and_its_intervals_cover():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 4, 40).astype(float)  # many ties
    y = np.r_[np.ones(30), np.zeros(40)]
    assert stats.auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]))
    d_a, d_b = 1.0, 0.5  # unit-variance normal scores shifted by d: AUC = Phi(d / sqrt 2)
    truth_a, truth_d = norm.cdf(d_a / np.sqrt(2)), norm.cdf(d_a / np.sqrt(2)) - norm.cdf(d_b / np.sqrt(2))
    y = np.r_[np.ones(40, bool), np.zeros(40, bool)]

    def draw(r):
        noise = r.normal(size=80)  # shared by both methods: the pairing the interval must use
        return y, y * d_a + noise, y * d_b + 0.5 * noise + np.sqrt(0.75) * r.normal(size=80)

    kw = dict(n_resamples=400)
    assert 0.88 <= _coverage(draw, lambda y_, a, b: stats.auc_ci(y_, a, **kw), truth_a) <= 1.0
    assert 0.88 <= _coverage(draw, lambda y_, a, b: stats.auc_diff_ci(y_, a, b, **kw), truth_d) <= 1.0
    with pytest.raises(ValueError, match="same prompts"):
        stats.auc_diff_ci(y, y[:5], y)


def test_corr_ci_covers():
    rho = 0.8

    def draw(r):
        x = r.normal(size=40)
        return x, rho * x + np.sqrt(1 - rho**2) * r.normal(size=40)

    assert 0.86 <= _coverage(draw, lambda a, b: stats.corr_ci(a, b, n_resamples=400), rho) <= 1.0


@pytest.mark.parametrize("ci, side, line, expected", [
    ((0.2, 0.4), ">", 0.1, "held"), ((0.05, 0.4), ">", 0.1, "inconclusive"), ((-0.3, 0.05), ">", 0.1, "not held"),
    ((0.1, 0.4), ">", 0.1, "inconclusive"),  # touching the line: a tie is never held
    ((-2, -1), "<", 0, "held"), ((1, 2), "<", 0, "not held"), ((0.6, 1.9), "in", (0.5, 2), "held"),
    ((0.4, 1.9), "in", (0.5, 2), "inconclusive"), ((2.1, 3), "in", (0.5, 2), "not held"),
    ((float("nan"), float("nan")), ">", 0, "inconclusive"),
])
def test_verdict_rule(ci, side, line, expected):
    assert stats.verdict(ci, 0.0, side, line) == expected


def test_exact_values_and_combination():
    assert stats.verdict(None, 1e-6, "<", 1e-3) == "held"
    assert stats.verdict(None, 1e-3, "<", 1e-3) == "inconclusive"
    assert stats.combine(["held", "inconclusive"]) == "inconclusive"
    assert stats.combine(["held", "not held", "inconclusive"]) == "not held"
    assert stats.combine(["held", "held"]) == "held"
    assert stats.bootstrap_ci(np.median, [1.0]) != stats.bootstrap_ci(np.median, [1.0])  # nan: one value, no interval
