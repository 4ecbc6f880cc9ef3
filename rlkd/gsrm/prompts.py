"""The GSRM and judge prompts, and the GSRM's SFT records built from the same code.

Serving (`decompose_messages`) and training (`sft_record`) share one builder, so the prompt a
GSRM was fine-tuned on is the prompt it is asked with. `PROMPT_VERSION` keys the
teacher-decomposition cache: change it whenever a prompt changes, so no cached decomposition
made with an old prompt is reused.
"""

from __future__ import annotations

import re

from rlkd.gsrm.steps import format_steps
from rlkd.gsrm.types import DecomposeRequest, Kind, Question, Step
from rlkd.spec.job import Domain

PROMPT_VERSION = "rlkd-gsrm-v1"

DECOMPOSE_SYSTEM = (
    "You rewrite a reasoning path as an ordered list of steps. Each step has three parts:\n"
    "[Meta-reasoning N]: why this step comes next: what the previous steps established, which "
    "sub-problem to pick now and why. Do not give this step's answer here.\n"
    "[Sub-problem N]: the single question this step solves.\n"
    "[Answer N]: the brief answer to that question, without reasoning.\n"
    "Number the steps from 1, keep the order in which the reasoning takes them, and make the "
    "steps fine-grained. Do not restate the problem's givens as steps. The last step's answer "
    "answers the original problem. Write only the steps."
)

_DOMAIN_INTRO: dict[Domain, str] = {
    "math": "The reasoning solves a mathematics problem.",
    "code": "The reasoning designs a program; a step may settle an algorithm, a data structure, "
    "an edge case or a piece of code.",
    "science": "The reasoning answers a science question; a step may recall a law or fact, "
    "set up a relation or compute a quantity.",
    "puzzle": "The reasoning solves a logic puzzle; a step may draw a deduction, test a case or "
    "rule an option out.",
}

# One worked example per domain, written for this project: (problem, reasoning, steps).
_EXAMPLES: dict[Domain, tuple[str, str, list[Step]]] = {
    "math": (
        "A rectangle's length is 3 more than its width and its perimeter is 26. What is its area?",
        "Let the width be w, so the length is w + 3. The perimeter is 2(w + w + 3) = 4w + 6 = 26, "
        "so 4w = 20 and w = 5. Then the length is 8. Area = 5 * 8 = 40.",
        [
            Step(
                "Both sides are unknown but tied together, so name the width and express the "
                "length through it.",
                "How can the length be written in terms of the width w?",
                "w + 3",
            ),
            Step(
                "With one unknown, the perimeter condition gives an equation for w.",
                "What is w if 2(w + (w + 3)) = 26?",
                "w = 5",
            ),
            Step(
                "The width is known, so the length follows from the relation in step 1.",
                "What is the length?",
                "8",
            ),
            Step(
                "Both sides are known; the area is their product.",
                "What is the area of a 5 by 8 rectangle?",
                "40",
            ),
        ],
    ),
    "code": (
        "Write a function that returns the length of the longest run of equal adjacent "
        "elements in a list.",
        "An empty list has no run, so return 0. Otherwise walk the list once, keeping the "
        "current run length and the best so far: if an element equals the previous one the run "
        "grows, else it restarts at 1. Update the best after each element. One pass, O(n).",
        [
            Step(
                "Before the main loop, settle the input that has no runs at all.",
                "What should the function return for an empty list?",
                "0",
            ),
            Step(
                "A run only depends on neighbouring elements, so a single pass with a little "
                "state suffices.",
                "What state does one pass over the list need?",
                "The current run length and the longest run so far.",
            ),
            Step(
                "With that state, each element either extends the run or starts a new one.",
                "How is the current run length updated at each element?",
                "It grows by 1 if the element equals the previous one, else it restarts at 1.",
            ),
            Step(
                "The loop is complete once the best value is kept up to date; state the cost.",
                "What is the algorithm and its running time?",
                "One pass updating the best after each element; O(n) time, O(1) space.",
            ),
        ],
    ),
    "science": (
        "A 2 kg cart moving at 3 m/s hits a wall and stops in 0.5 s. What average force did the "
        "wall exert?",
        "Force relates to the change of momentum over time. Initial momentum is 2 * 3 = 6 kg m/s, "
        "final is 0, so the change is 6 kg m/s. Average force = 6 / 0.5 = 12 N, opposite to the "
        "motion.",
        [
            Step(
                "The question gives masses, speeds and a time, which points to the impulse-"
                "momentum relation.",
                "Which law connects the force with the given quantities?",
                "Average force equals change of momentum divided by time.",
            ),
            Step(
                "To use it, compute the momentum change first.",
                "What is the cart's change of momentum?",
                "6 kg m/s",
            ),
            Step(
                "Divide the change by the stopping time to get the force.",
                "What is the average force?",
                "12 N, directed against the motion",
            ),
        ],
    ),
    "puzzle": (
        "Ann, Ben and Cy own a cat, a dog and a fish, one each. Ann is allergic to fur. Ben "
        "walks his pet daily. Who owns the fish?",
        "Ann cannot own the cat or the dog because of fur, so Ann owns the fish. Ben walks his "
        "pet, which fits the dog. So Cy has the cat, and the fish is Ann's.",
        [
            Step(
                "Ann's allergy excludes the furry pets, which pins down her pet first.",
                "Which pet can Ann own?",
                "The fish",
            ),
            Step(
                "With the fish taken, Ben's daily walks decide between the cat and the dog.",
                "Which pet does Ben own?",
                "The dog",
            ),
            Step(
                "Only one pet and one person remain; answer the question asked.",
                "Who owns the fish?",
                "Ann",
            ),
        ],
    ),
}

_JUDGE_SYSTEM = "You compare two texts. Reply with exactly one word: yes or no."
_JUDGE_ASK: dict[Kind, tuple[str, str]] = {
    "meta": ("Are these two reasoning steps devoted to solving the same problem?", "Step"),
    "subproblem": ("Do these two questions ask for the same thing?", "Question"),
    "answer": ("Are these two answers equal?", "Answer"),
}


def _user_prompt(request: DecomposeRequest) -> str:
    problem, reasoning, steps = _EXAMPLES[request.domain]
    return (
        f"{_DOMAIN_INTRO[request.domain]}\n\n"
        f"Example problem:\n{problem}\n\nExample reasoning:\n{reasoning}\n\n"
        f"Example decomposition:\n{format_steps(steps)}\n\n"
        f"Problem:\n{request.problem}\n\nDecompose this reasoning:\n{request.reasoning}"
    )


def decompose_messages(request: DecomposeRequest) -> list[dict[str, str]]:
    """The OpenAI chat messages that ask the GSRM to decompose `request.reasoning`."""
    return [
        {"role": "system", "content": DECOMPOSE_SYSTEM},
        {"role": "user", "content": _user_prompt(request)},
    ]


def sft_record(
    request: DecomposeRequest, decomposition_text: str
) -> dict[str, list[dict[str, str]]]:
    """One GSRM training record in TRL's conversational prompt-completion form, so SFT learns
    the decomposition only, from exactly the serving prompt."""
    return {
        "prompt": decompose_messages(request),
        "completion": [{"role": "assistant", "content": decomposition_text}],
    }


def judge_messages(question: Question) -> list[dict[str, str]]:
    """Chat messages asking the judge one yes/no question, the teacher's part first."""
    ask, label = _JUDGE_ASK[question.kind]
    return [
        {"role": "system", "content": _JUDGE_SYSTEM},
        {
            "role": "user",
            "content": f"{ask}\n\n{label} 1: {question.teacher}\n\n{label} 2: {question.student}"
            "\n\nAnswer with one word, yes or no.",
        },
    ]


def parse_verdict(reply: str) -> bool | None:
    """True when the reply opens with "yes", False with "no" (any case, punctuation or markup
    around it), None otherwise or when it says both: the caller counts that as unparseable
    instead of guessing, as the reference's substring test ("no" in "I don't know") did."""
    words: list[str] = re.findall(r"[a-z]+", reply.lower())
    if not words or words[0] not in ("yes", "no") or {"yes", "no"} <= set(words):
        return None
    return words[0] == "yes"
