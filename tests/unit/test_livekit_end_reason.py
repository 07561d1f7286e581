"""A room call's end reasons reach the wire as they are named: the session's ``EndReason`` is the
gateway proto's enum, value for value (Converse sends ``reason.value``; call records the name)."""

from __future__ import annotations

from common.gen.voiceai.gateway.v1 import gateway_pb2
from gateway.session.events import EndReason


def test_every_end_reason_is_the_proto_value_of_the_same_name() -> None:
    for reason in EndReason:
        assert gateway_pb2.EndReason.Name(reason.value) == f"END_REASON_{reason.name}"  # type: ignore[arg-type]
    assert EndReason.TRANSFERRED.value == gateway_pb2.END_REASON_TRANSFERRED
    named = set(gateway_pb2.EndReason.DESCRIPTOR.values_by_name) - {"END_REASON_UNSPECIFIED"}
    assert named == {f"END_REASON_{r.name}" for r in EndReason}
