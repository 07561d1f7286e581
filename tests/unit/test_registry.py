"""common.registry: engine names resolve to classes, and a wrong name says what to write instead."""

from __future__ import annotations

import grpc
import pytest

from common import registry
from common.errors import FailedPrecondition
from llm_svc.providers import REGISTRY as LLM_REGISTRY
from llm_svc.providers.offline_responder import OfflineResponder
from tests.fakes.llm import ZeroCostChatModel

REGISTRY = {"local": "llm_svc.providers.offline_responder:OfflineResponder", "other": "json:JSONDecoder"}


def test_a_registry_key_loads_its_class() -> None:
    assert registry.load("local", REGISTRY) is OfflineResponder
    assert registry.load("local", LLM_REGISTRY) is OfflineResponder


def test_a_module_path_loads_without_a_registry_entry() -> None:
    assert registry.load("tests.fakes.llm:ZeroCostChatModel", REGISTRY) is ZeroCostChatModel
    assert registry.load("collections:OrderedDict", {}).__name__ == "OrderedDict"


def test_an_unknown_key_names_the_known_ones() -> None:
    with pytest.raises(FailedPrecondition) as info:
        registry.load("deepgram", REGISTRY)
    assert info.value.message == "unknown engine 'deepgram': use one of local, other, or 'module:Class'"
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_missing_attribute_names_the_module() -> None:
    with pytest.raises(FailedPrecondition, match=r"engine 'json:Nope': json has no Nope"):
        registry.load("json:Nope", REGISTRY)


def test_a_module_that_cannot_be_imported_is_a_clear_error() -> None:
    with pytest.raises(
        FailedPrecondition, match=r"engine 'no_such_pkg\.mod:X': cannot import no_such_pkg\.mod"
    ):
        registry.load("no_such_pkg.mod:X", REGISTRY)
