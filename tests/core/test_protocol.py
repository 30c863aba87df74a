"""The typed messages of psdist.core.protocol: rejection kinds, rejections, push replies."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import NONFINITE, STALE, Push, PushReply, Rejection, RejectKind
from psdist.core.rules import Rule, ServerRule
from psdist.core.server import ServerState
from psdist.errors import ServerError
from psdist.optim import SGD


def test_kinds_are_the_strings_of_metrics_and_checkpoints():
    assert [k.value for k in RejectKind] == ["nonfinite", "stale", "duplicate", "rule"]
    assert (NONFINITE, STALE) == (RejectKind.NONFINITE, RejectKind.STALE)
    assert RejectKind("stale") is STALE and STALE == "stale"
    assert (str(STALE), f"{STALE}", f"{STALE:>7}") == ("stale", "stale", "  stale")
    # a counter read back from JSON (plain str keys) is found with the member
    counts = json.loads(json.dumps({NONFINITE: 2}))
    assert counts == {"nonfinite": 2} and counts[NONFINITE] == 2 and counts.get(STALE) is None


def test_a_rejection_carries_its_kind_and_shows_as_kind_colon_reason():
    r = Rejection(RejectKind.DUPLICATE, "this worker already contributed")
    assert str(r) == "duplicate: this worker already contributed"
    reply = PushReply(False, 3, 1, r)
    assert (reply.kind, reply.reason) == (RejectKind.DUPLICATE, "duplicate: this worker already contributed")
    assert pickle.loads(pickle.dumps(reply)) == reply  # travels from the actor as it is
    ok = PushReply(True, 4, 0)
    assert (ok.kind, ok.reason) == (None, None)


@pytest.mark.parametrize("applied, rejection", [(True, Rejection(STALE, "old")), (False, None)])
def test_a_reply_is_either_applied_or_rejected(applied, rejection):
    with pytest.raises(ValueError, match="either applied or rejected"):
        PushReply(applied, 0, 0, rejection)


class _TextRule(ServerRule):
    """A rule written for the old protocol: a "kind: why" string from admit."""

    def admit(self, state, push, staleness):  # type: ignore[override]
        return "custom: why"


class _OwnRule(ServerRule):
    def admit(self, state, push, staleness):
        return Rejection(RejectKind.RULE, "odd workers only") if push.worker == "even" else None


@dataclass(frozen=True)
class _Rule(Rule):
    text: bool = False  # the old protocol's rule, else one with its own kind of rejection

    def server_side(self) -> ServerRule:
        return _TextRule() if self.text else _OwnRule()


def _state(rule: Rule) -> ServerState:
    layout = Layout.of({"model": FlatSpec((Entry("w", (2,), "float32", 0, "param"),), 2)})
    return ServerState(layout, np.zeros(2, np.float32), {"model": SGD(lr=0.1)}, rule)


def test_a_rules_own_rejection_is_counted_under_its_kind():
    state = _state(_Rule())
    reply = state.push(Push("even", 0, np.ones(2, np.float32), 4, 0.5))
    assert (reply.applied, reply.kind, reply.reason) == (False, RejectKind.RULE, "rule: odd workers only")
    assert state.push(Push("odd", 0, np.ones(2, np.float32), 4, 0.5)).applied
    assert state.rejected == {"rule": 1} and state.metrics()["workers"]["even"]["rejected"] == 1
    state.validate_state()


def test_a_rule_returning_text_is_told_how_to_port(server_states):
    state = _state(_Rule(text=True))
    server_states.remove(state)  # the push is counted when the rule fails: no invariants to check
    with pytest.raises(ServerError, match=r"_TextRule.admit returned 'custom: why'; return "
                       r"psdist.core.protocol.Rejection\(RejectKind.<kind>, reason\) or None"):
        state.push(Push("w", 0, np.ones(2, np.float32), 4, 0.5))
