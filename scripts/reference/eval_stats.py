"""Reference values for crates/eval/src/stats.rs, computed independently with Python's standard
library: Wilson intervals (z from statistics.NormalDist), pass@k and the exact McNemar p-value with
exact integer binomials (math.comb, fractions). Run: python3 scripts/reference/eval_stats.py"""
from fractions import Fraction
from math import comb, sqrt
from statistics import NormalDist

z = NormalDist().inv_cdf(0.975)


def wilson(x, n):
    p = x / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def pass_at_k(n, c, k):
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def mcnemar(b, c):
    n = b + c
    return min(Fraction(1), 2 * Fraction(sum(comb(n, i) for i in range(min(b, c) + 1)), 2**n))


for x, n in [(8, 10), (0, 10), (50, 100)]:
    print(f"wilson({x}, {n}) = ({wilson(x, n)[0]:.7f}, {wilson(x, n)[1]:.7f})")
for n, c, k in [(5, 2, 1), (5, 2, 2), (10, 3, 5), (10, 0, 5), (3, 2, 2)]:
    print(f"pass@k(n={n}, c={c}, k={k}) = {pass_at_k(n, c, k)} = {float(pass_at_k(n, c, k)):.12f}")
for b, c in [(1, 9), (1, 3), (5, 5)]:
    print(f"mcnemar_exact({b}, {c}) = {mcnemar(b, c)} = {float(mcnemar(b, c)):.12f}")
