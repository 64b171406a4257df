//! Statistics for evaluation summaries: the Wilson score interval for a proportion, a normal
//! interval for a mean of fractional scores, the unbiased pass@k estimator (Chen et al. 2021), and a
//! paired comparison of two runs on the same items (mean difference with a paired 95% interval and
//! the exact McNemar test for 0/1 scores).

pub const Z95: f64 = 1.959_963_984_540_054;

/// 95% Wilson score interval for `successes` out of `n` (can be fractional sums of 0/1 scores).
pub fn wilson(successes: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = successes / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Mean and 95% normal interval (clamped to [0, 1]) of per-item scores in [0, 1]; Wilson when every
/// score is 0 or 1.
pub fn mean_ci(scores: &[f64]) -> (f64, f64, f64) {
    let n = scores.len();
    if n == 0 {
        return (0.0, 0.0, 1.0);
    }
    let mean = scores.iter().sum::<f64>() / n as f64;
    if scores.iter().all(|&s| s == 0.0 || s == 1.0) {
        let (lo, hi) = wilson(mean * n as f64, n);
        return (mean, lo, hi);
    }
    let se = sd(scores, mean) / (n as f64).sqrt();
    (mean, (mean - Z95 * se).max(0.0), (mean + Z95 * se).min(1.0))
}

fn sd(xs: &[f64], mean: f64) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Unbiased pass@k from `n` samples of which `c` passed: 1 - C(n-c, k) / C(n, k).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(k >= 1 && k <= n && c <= n, "pass@k needs 1 <= k <= n and c <= n");
    if n - c < k {
        return 1.0;
    }
    // Product form, stable for large n.
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub n: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean(b - a) and its 95% interval.
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    /// For 0/1 scores: items only A got right, items only B got right, exact McNemar p-value.
    pub only_a: usize,
    pub only_b: usize,
    pub p_value: Option<f64>,
}

/// Paired comparison of two runs' per-item scores (same items, same order).
pub fn paired(a: &[f64], b: &[f64]) -> Paired {
    assert_eq!(a.len(), b.len());
    let n = a.len();
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let diff = mean(&d);
    let se = if n > 0 { sd(&d, diff) / (n as f64).sqrt() } else { 0.0 };
    let only_a = a.iter().zip(b).filter(|(x, y)| **x == 1.0 && **y == 0.0).count();
    let only_b = a.iter().zip(b).filter(|(x, y)| **x == 0.0 && **y == 1.0).count();
    let binary = a.iter().chain(b).all(|&s| s == 0.0 || s == 1.0);
    Paired {
        n,
        mean_a: mean(a),
        mean_b: mean(b),
        diff,
        lo: diff - Z95 * se,
        hi: diff + Z95 * se,
        only_a,
        only_b,
        p_value: binary.then(|| mcnemar_exact(only_a, only_b)),
    }
}

/// Two-sided exact McNemar p-value: the discordant pairs are Binomial(b + c, 1/2) under H0.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let m = b.min(c);
    // P(X <= m) with log-space terms: log C(n, i) + n log 1/2.
    let mut log_term = n as f64 * 0.5f64.ln();
    let mut cdf = log_term.exp();
    for i in 1..=m {
        log_term += ((n - i + 1) as f64 / i as f64).ln();
        cdf += log_term.exp();
    }
    (2.0 * cdf).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn wilson_known_values() {
        // Reference values: scripts/reference/eval_stats.py (Python stdlib, independent code).
        let (lo, hi) = wilson(8.0, 10);
        assert!(close(lo, 0.490_162_5, 1e-6) && close(hi, 0.943_317_8, 1e-6), "{lo} {hi}");
        let (lo, hi) = wilson(0.0, 10);
        assert!(lo == 0.0 && close(hi, 0.277_532_8, 1e-6), "{hi}");
        let (lo, hi) = wilson(50.0, 100);
        assert!(close(lo, 0.403_831_5, 1e-6) && close(hi, 0.596_168_5, 1e-6), "{lo} {hi}");
        assert_eq!(wilson(0.0, 0), (0.0, 1.0));
    }

    #[test]
    fn pass_at_k_hand_values() {
        assert!(close(pass_at_k(5, 2, 1), 0.4, 1e-12));
        assert!(close(pass_at_k(5, 2, 2), 0.7, 1e-12)); // 1 - C(3,2)/C(5,2) = 1 - 3/10
        assert!(close(pass_at_k(10, 3, 5), 1.0 - 21.0 / 252.0, 1e-12)); // C(7,5)=21, C(10,5)=252
        assert_eq!(pass_at_k(10, 0, 5), 0.0);
        assert_eq!(pass_at_k(3, 2, 2), 1.0);
        assert_eq!(pass_at_k(1, 1, 1), 1.0);
    }

    #[test]
    fn paired_and_mcnemar() {
        assert!(close(mcnemar_exact(1, 9), 2.0 * 11.0 / 1024.0, 1e-12));
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        let a = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let b = [1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let p = paired(&a, &b);
        assert_eq!((p.only_a, p.only_b), (1, 3));
        assert!(close(p.diff, 2.0 / 6.0, 1e-12));
        assert!(p.lo < p.diff && p.diff < p.hi);
        assert!(close(p.p_value.unwrap(), 2.0 * 5.0 / 16.0, 1e-12));
        let (m, lo, hi) = mean_ci(&[0.5, 1.0, 0.0, 0.5]);
        assert!(close(m, 0.5, 1e-12) && lo > 0.0 && hi < 1.0);
    }
}
