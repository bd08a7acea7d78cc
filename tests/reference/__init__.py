"""Reference implementations the product's PromQL templates and exporters are checked against.

They compute, in Python and from first principles (or scipy), what a template computes in
Prometheus: the drift statistics over per-version distributions, ECE and the mean Brier score over
the exported calibration tallies. The product never calls them; the tests compare both.
"""
