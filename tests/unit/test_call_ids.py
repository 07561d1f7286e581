"""The one call-id rule: every shape the probes tried, decided once."""

from __future__ import annotations

import pytest

from common.call_ids import check_call_id, new_call_id, valid_call_id
from common.errors import InvalidArgument

# (call id, accepted?): the shapes from issue 15's probes and the rule's edges.
SHAPES: list[tuple[str, bool]] = [
    ("probe-call-1", True),
    ("dupcase-7", True),
    ("DupCase-7", False),  # case-sensitive: refused, never folded into dupcase-7
    ("Probe_Call.1", False),
    ("probe:call:2", False),
    ("c" * 100, False),
    ("c" * 63, True),
    ("c" * 64, False),
    ("0", True),
    ("-lead", False),
    ("trail-", False),
    ("a b", False),
    ("a\x00b", False),
    ("c/../d", False),
    ("écoute", False),
    ("", False),
]


@pytest.mark.parametrize(("value", "ok"), SHAPES)
def test_one_rule_decides_every_shape(value: str, ok: bool) -> None:
    assert valid_call_id(value) is ok
    if ok:
        assert check_call_id(value, "call_id") == value
    else:
        with pytest.raises(InvalidArgument) as info:
            check_call_id(value, "call_id")
        assert info.value.message.startswith("call_id ") and "lowercase" in info.value.message


def test_minted_ids_follow_the_rule_and_differ() -> None:
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100 and all(valid_call_id(i) for i in ids)
