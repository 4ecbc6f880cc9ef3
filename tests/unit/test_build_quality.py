"""eval-gsrm's grading: the GSRM's replies against the annotator's decompositions, with the rule
judge (a real backend), on cases whose numbers are known; the gate's verdict in words."""

from __future__ import annotations

import asyncio
import socket

import pytest

from rlkd.build.quality import annotator_steps, gate_failures, grade, table
from rlkd.gsrm.backends import build_judge
from rlkd.gsrm.backends.chat import Reply
from rlkd.gsrm.backends.rule import RuleJudge
from rlkd.gsrm.steps import format_steps
from rlkd.gsrm.types import Failure, Step
from rlkd.spec.job import GSRMGateSpec, InferenceSpec
from rlkd.spec.progress import GSRMEvaluation
from rlkd.toy import arithmetic
from tests.gsrm_build import annotation

GATE = GSRMGateSpec(min_parse_rate=0.9, min_step_count_agreement=0.5, min_step_agreement=0.5)
# Three-group problems: five steps each (three groups, two additions).
RECORDS = [
    annotation(i, p)
    for i, p in enumerate(p for p in arithmetic.problems("train", 40) if len(p.groups) == 3)
][:4]


def replies() -> list[Reply | Failure]:
    """The GSRM: right on record 0; on record 1 one step short with step 2's sub-problem wrong;
    cut at the token budget on record 2; no steps at all on record 3; a crash on none."""
    exact = RECORDS[0]["completion"][0]["content"]
    steps = annotator_steps(RECORDS[1])[:-1]
    steps[1] = Step(steps[1].meta, "something else", steps[1].answer)
    return [
        Reply(exact),
        Reply(format_steps(steps)),
        Reply("[Meta-reasoning 1]: Take", truncated=True),
        Reply("I cannot decompose this."),
    ]


def test_the_numbers_of_known_replies() -> None:
    assert [len(annotator_steps(r)) for r in RECORDS] == [5, 5, 5, 5]
    report = asyncio.run(grade(RECORDS, replies(), RuleJudge(), model="m", gate=GATE))
    assert [(r.gsrm_steps, r.agreed_steps, r.error) for r in report.rows] == [
        (5, 5, None),
        (4, 3, None),
        (0, 0, "token_limit"),
        (0, 0, None),
    ]
    assert (report.parse_rate, report.step_count_agreement) == (0.5, 0.25)
    assert report.step_agreement == pytest.approx((1 + 3 / 5) / 4)
    assert report.errors == {"token_limit": 1}
    assert not report.passed
    assert report.gate_failures == [
        "parse rate 0.500 is below 0.9 (spec.gsrm.build.gate.minParseRate)",
        "step-count agreement 0.250 is below 0.5 (spec.gsrm.build.gate.minStepCountAgreement)",
        "step agreement 0.400 is below 0.5 (spec.gsrm.build.gate.minStepAgreement)",
    ]
    shown = table(report, GATE, judged=True)
    assert "parse rate               0.500  >= 0.9    FAIL" in shown
    assert "errors: token_limit 1" in shown and "gate: FAILED on 4 examples" in shown


def test_without_a_judge_step_agreement_is_not_measured_nor_gated() -> None:
    exact = [Reply(r["completion"][0]["content"]) for r in RECORDS]
    report = asyncio.run(grade(RECORDS, exact, None, model="m", gate=GATE))
    assert (report.parse_rate, report.step_count_agreement, report.step_agreement) == (1, 1, None)
    assert report.passed and report.gate_failures == []
    assert all(r.agreed_steps is None for r in report.rows)
    assert "not measured: minStepAgreement is 0" in table(report, GATE, judged=False)


def test_a_judge_that_fails_is_counted_and_fails_a_step_agreement_gate() -> None:
    with socket.socket() as sock:  # a port nothing listens on: every judge request fails
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    judge = build_judge(
        InferenceSpec.model_validate(
            {"backend": "openai", "model": "j", "url": closed, "request": {"maxRetries": 0}}
        )
    )
    exact = [Reply(r["completion"][0]["content"]) for r in RECORDS]

    async def run() -> GSRMEvaluation:
        try:
            return await grade(RECORDS, exact, judge, model="m", gate=GATE)
        finally:
            await judge.model.aclose()  # type: ignore[attr-defined]

    report = asyncio.run(run())
    assert report.errors == {"judge_connection": 4}
    assert report.step_agreement is None
    assert report.gate_failures == [
        "step agreement could not be measured on 4 of 4 held-out annotations (the judge failed; "
        "see errors): check spec.judge and run eval-gsrm again "
        "(spec.gsrm.build.gate.minStepAgreement 0.5)"
    ]
    lenient = GSRMGateSpec(min_parse_rate=0.9)
    assert gate_failures(report, lenient, judged=True) == []
