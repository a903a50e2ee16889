"""Interval maths (mixjax.intervals) against numpy.quantile, scipy's normal distribution and scipy's BCa bootstrap."""

import numpy as np
import pytest
from scipy import special, stats

from mixjax import intervals
from mixjax.intervals import bca_interval, bca_levels, norm_cdf, norm_ppf, percentile_interval, quantile


def test_default_level_is_ninety_percent():
    """Called without a level, the intervals are the 90 % ones: numpy's 5th and 95th percentiles."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(101, 3))
    ref_lo, ref_hi = np.percentile(x, [5, 95], axis=0)
    for lo, hi in (percentile_interval(x), intervals.interval(x)):
        np.testing.assert_allclose(lo, ref_lo, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(hi, ref_hi, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95, 0.99])
def test_percentile_interval_matches_numpy_quantile(level):
    rng = np.random.default_rng(int(100 * level))
    for R in (1, 2, 7, 50):
        x = rng.standard_t(3, size=(R, 4, 2))
        lo, hi = percentile_interval(x, level)
        a = (1 - level) / 2
        np.testing.assert_allclose(lo, np.quantile(x, a, axis=0), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(hi, np.quantile(x, 1 - a, axis=0), rtol=1e-13, atol=1e-15)
        assert lo.shape == hi.shape == (4, 2)


def test_nonfinite_values_are_left_out_per_element():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    x[[3, 17], 0] = np.nan
    x[5, 1] = np.inf
    x[:, 2] = np.nan
    lo, hi = percentile_interval(x, 0.8)
    np.testing.assert_allclose(lo[0], np.quantile(x[np.isfinite(x[:, 0]), 0], 0.1), rtol=1e-13)
    np.testing.assert_allclose(hi[1], np.quantile(x[np.isfinite(x[:, 1]), 1], 0.9), rtol=1e-13)
    assert np.isnan(lo[2]) and np.isnan(hi[2])
    # per-element quantile levels
    q = np.array([0.25, 0.5, 0.75])
    np.testing.assert_allclose(quantile(x[:, :2], q[:2]), [np.nanquantile(x[:, 0], 0.25), np.quantile(x[np.isfinite(x[:, 1]), 1], 0.5)], rtol=1e-13)


def test_normal_helpers_match_scipy():
    z = np.linspace(-9, 9, 37)
    np.testing.assert_allclose(norm_cdf(z), special.ndtr(z), rtol=1e-13, atol=1e-300)
    p = np.concatenate([np.logspace(-12, -1, 12), np.linspace(0.05, 0.95, 19), 1 - np.logspace(-1, -10, 10)])
    np.testing.assert_allclose(norm_ppf(p), special.ndtri(p), rtol=1e-12)
    assert norm_ppf(0.0) == -np.inf and norm_ppf(1.0) == np.inf and np.isnan(norm_ppf(1.5))


def test_level_is_checked():
    for bad in (0.0, 1.0, 1.5, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="level"):
            percentile_interval(np.ones(5), bad)
    with pytest.raises(ValueError, match="bca"):
        intervals.interval(np.ones(5), 0.9, "bca")
    with pytest.raises(ValueError, match="method"):
        intervals.interval(np.ones(5), 0.9, "basic")


def skewed_statistic(x, axis=-1):
    """A skewed, biased statistic (variance with divisor n) so that both z0 and the acceleration are non-zero."""
    return np.var(x, axis=axis)


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_bca_matches_scipy_bootstrap(level):
    """The same bootstrap distribution through scipy.stats.bootstrap(method='BCa') and through bca_interval."""
    rng = np.random.default_rng(7)
    data = rng.exponential(size=25)
    res = stats.bootstrap((data,), skewed_statistic, method="BCa", confidence_level=level, n_resamples=999, random_state=3)
    dist = res.bootstrap_distribution
    est = skewed_statistic(data)
    jack = np.array([skewed_statistic(np.delete(data, i)) for i in range(data.size)])
    lo, hi = bca_interval(dist, est, jack, level)
    np.testing.assert_allclose([lo, hi], [res.confidence_interval.low, res.confidence_interval.high], rtol=1e-10)
    # the BCa interval differs from the percentile one here (skewed statistic), so the adjustment is exercised
    plo, phi = percentile_interval(dist, level)
    assert abs(lo - plo) > 1e-3 * (phi - plo)


def test_bca_closed_form_levels():
    """z0 = Phi^-1(fraction below the estimate), a from the jackknife: levels by the closed form, per element."""
    rng = np.random.default_rng(11)
    R, U = 400, 30
    boot = rng.normal(size=(R, 2))
    est = np.array([0.3, -0.1])
    jack = rng.gamma(2.0, size=(U, 2))
    q_lo, q_hi = bca_levels(boot, est, jack, 0.9)
    for k in range(2):
        z0 = special.ndtri(np.mean(boot[:, k] < est[k]))
        d = jack[:, k].mean() - jack[:, k]
        a = (d**3).sum() / (6 * (d**2).sum() ** 1.5)
        for z, got in ((special.ndtri(0.05), q_lo[k]), (special.ndtri(0.95), q_hi[k])):
            np.testing.assert_allclose(got, special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))), rtol=1e-12)
    # no bias and no acceleration: BCa reduces to the percentile interval
    sym = np.concatenate([boot[:, :1], -boot[:, :1], np.zeros((1, 1))])
    lo, hi = bca_interval(sym, np.zeros(1), np.ones((U, 1)), 0.9)
    plo, phi = percentile_interval(sym, 0.9)
    np.testing.assert_allclose([lo, hi], [plo, phi], rtol=1e-13)
