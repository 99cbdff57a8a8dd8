"""Benchmark scripts (not tests). Each prints figures as ratios against a baseline measured in
the same process, and writes JSON under bench/results/."""
