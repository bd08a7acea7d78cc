"""The plain-words sentence a rollback's reason opens with."""

from __future__ import annotations

import pytest

from canary.decision.analysis import CheckResult
from canary.decision.plain_reason import plain_sentence


@pytest.mark.parametrize(
    ("template", "result", "sentence"),
    [
        ("latency_p95", CheckResult("p", "fail", 0.0196, 0.0155), "v4 is slower than v2: p95 19.6 ms vs 15.5 ms"),
        ("latency_p99", CheckResult("p", "fail", 2.5), "v4 is too slow: p99 2.5 s"),
        ("latency_p50", CheckResult("p", "fail"), "v4 is slower than v2 (p50)"),
        ("error_rate", CheckResult("e", "fail", 0.25, 0.0, 400), "v4 fails more requests than v2: 25% vs 0% of 400 requests"),
        ("error_rate", CheckResult("e", "fail", 0.05), "v4 fails too many requests: 5%"),
        ("accuracy", CheckResult("a", "fail", 0.71, 0.96, 291), "v4 answers less accurately than v2: 71% vs 96% of 291 labelled requests"),
        ("accuracy", CheckResult("a", "fail", 0.5), "v4 answers too inaccurately: 50% correct"),
        ("shadow_agreement", CheckResult("s", "fail", 0.8, None, 150), "v4 disagrees with v2 on only 80% of 150 compared predictions"),
        # A custom query or another template: the check's name and its values, nothing guessed.
        (None, CheckResult("queue-depth", "fail", 12.0, 3.0), "v4 fails check 'queue-depth': 12 vs 3"),
        ("prediction_psi", CheckResult("psi", "fail"), "v4 fails check 'psi'"),
    ],
)
def test_each_kind_of_check_in_plain_words(template, result, sentence):
    assert plain_sentence(template, result, "4", "2") == sentence
