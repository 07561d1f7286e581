"""Every string and repeated field of every API is bounded, and the bound is enforced: the test
walks every RPC's request type, builds a request over each field's limit (and one with a NUL in
each string) and expects INVALID_ARGUMENT naming that field."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

import common.gen
from common.errors import InvalidArgument
from common.limits import check_message, repeated_limit, string_limit

MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(common.gen.__path__, "common.gen.")
    if info.name.endswith("_pb2")
]


def request_types() -> list[Descriptor]:
    found = {
        m.input_type.full_name: m.input_type
        for mod in MODULES
        for s in mod.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    return [found[name] for name in sorted(found)]


def bounded_fields() -> list[tuple[str, Descriptor, list[FieldDescriptor]]]:
    """(id, request type, path of fields) for every string or repeated field reachable from a request."""
    out: list[tuple[str, Descriptor, list[FieldDescriptor]]] = []

    def walk(root: Descriptor, d: Descriptor, path: list[FieldDescriptor], seen: frozenset[str]) -> None:
        for f in d.fields:
            here = [*path, f]
            if f.is_repeated or f.type == FieldDescriptor.TYPE_STRING:
                out.append((f"{root.name}." + ".".join(x.name for x in here), root, here))
            if (
                f.type == FieldDescriptor.TYPE_MESSAGE
                and f.message_type.full_name not in seen
                and not f.is_repeated
            ) or (
                f.type == FieldDescriptor.TYPE_MESSAGE
                and f.is_repeated
                and f.message_type.full_name not in seen
            ):
                walk(root, f.message_type, here, seen | {f.message_type.full_name})

    for root in request_types():
        walk(root, root, [], frozenset({root.full_name}))
    return out


FIELDS = bounded_fields()


def _leaf_parent(root: Descriptor, path: list[FieldDescriptor]) -> tuple[Message, Message]:
    """A request with the path to ``path[-1]``'s message created (one item per repeated step)."""
    request = GetMessageClass(root)()
    node = request
    for f in path[:-1]:
        node = getattr(node, f.name).add() if f.is_repeated else getattr(node, f.name)
    return request, node


def test_every_request_field_is_reached() -> None:
    assert len(FIELDS) > 100  # the walk found the APIs' fields (about 110 today)


@pytest.mark.parametrize(("name", "root", "path"), FIELDS, ids=[f[0] for f in FIELDS])
def test_over_the_limit_is_refused_naming_the_field(
    name: str, root: Descriptor, path: list[FieldDescriptor]
) -> None:
    leaf = path[-1]
    request, parent = _leaf_parent(root, path)
    target = getattr(parent, leaf.name)
    if leaf.is_repeated:
        limit = repeated_limit(leaf)
        assert 0 < limit <= 10_000, f"{name} is not bounded"
        for _ in range(limit + 1):
            if leaf.type == FieldDescriptor.TYPE_MESSAGE:
                target.add()
            elif leaf.type == FieldDescriptor.TYPE_STRING:
                target.append("x")
            elif leaf.type == FieldDescriptor.TYPE_BYTES:
                target.append(b"x")
            else:
                target.append(0)
        expected = f"{leaf.name} has {limit + 1} items"
    else:
        limit = string_limit(leaf)
        assert 0 < limit <= 32_768, f"{name} is not bounded"
        setattr(parent, leaf.name, "x" * (limit + 1))
        expected = f"{leaf.name} is {limit + 1} characters"
    with pytest.raises(InvalidArgument) as info:
        check_message(request)
    assert expected in info.value.message
    if leaf.type == FieldDescriptor.TYPE_STRING and not leaf.is_repeated:
        setattr(parent, leaf.name, "ok\x00")
        with pytest.raises(InvalidArgument, match="NUL character"):
            check_message(request)
        setattr(parent, leaf.name, "x" * limit)
        check_message(request)  # at the limit is fine
