"""The one feedback rule: what a feedback answer must hold, and which label it gives.

The server's ``POST /feedback`` refuses exactly what this rule refuses, and ``collect``
quarantines exactly what it refuses, so an answer the API acknowledged is never thrown away
later, and nothing collect would reject is ever stored. The rule is a table (which actions
may come without a label) read by two forms of the same check: one answer at a time for the
server and for the wording of collect's reasons, and a whole Arrow column at a time for
collect's fast path.

    action    label                     gives
    (none)    required                  the label
    correct   required                  the label
    accept    optional                  the label, else the prediction (it was right)
    reject    optional                  the label, else nothing: wrong, right answer unknown

A label is one of the model's classes. For a numeric label (regression) a subclass changes
``label_problem`` and ``label_valid`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ACTIONS = ("accept", "correct", "reject")
LABEL_OPTIONAL = ("accept", "reject")  # every other answer, no action included, needs a label


class FeedbackRule:
    """The rule for one model's classes."""

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)

    # ------------------------------------------------------------ one answer at a time
    def problem(self, label: Any, action: Any) -> str | None:
        """Why this answer is refused, naming the field; None when it is valid."""
        if action is not None and action not in ACTIONS:
            return f"action: expected one of {', '.join(ACTIONS)}, got {action!r:.40}"
        if label is None:
            if action in LABEL_OPTIONAL:
                return None
            return "label: missing (only action 'accept' or 'reject' may come without a label)"
        return self.label_problem(label)

    def label_problem(self, label: Any) -> str | None:
        if isinstance(label, str) and label in self.classes:
            return None
        return f"label: unknown label {label!r:.40} (expected one of: {', '.join(self.classes)})"

    # ------------------------------------------------------- a column at a time (Arrow)
    def valid(self, label, action):
        """The same rule over Arrow arrays: a boolean array, null where an input is null."""
        import pyarrow as pa
        import pyarrow.compute as pc

        known_action = pc.is_in(action, value_set=pa.array(ACTIONS))
        action_ok = pc.or_kleene(pc.is_null(action), known_action)
        optional = pc.fill_null(pc.is_in(action, value_set=pa.array(LABEL_OPTIONAL)), False)
        label_ok = pc.if_else(pc.is_null(label), optional, self.label_valid(label))
        return pc.and_kleene(action_ok, label_ok)

    def label_valid(self, label):
        import pyarrow as pa
        import pyarrow.compute as pc

        return pc.is_in(label, value_set=pa.array(self.classes, pa.string()))

    def given(self, label, action, prediction):
        """The label each valid answer gives (Arrow): null for a reject without one."""
        import pyarrow.compute as pc

        accepted = pc.fill_null(pc.equal(action, "accept"), False)
        return pc.coalesce(label, pc.if_else(accepted, prediction, None))
