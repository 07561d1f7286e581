"""Errors of the encryption layer, mapped to gRPC codes like every ``VoiceAIError``."""

from __future__ import annotations

import grpc

from common.errors import FailedPrecondition, Unavailable, VoiceAIError


class DataLoss(VoiceAIError):
    """Stored ciphertext cannot be decrypted (corrupted, or its key was shredded)."""

    code = grpc.StatusCode.DATA_LOSS


class MissingKek(FailedPrecondition):
    """The key-encryption key is not configured or cannot be read: the service must not start."""


class KeyProviderUnavailable(Unavailable):
    """The remote key provider (KMS, Vault) did not answer; retrying may help."""


__all__ = ["DataLoss", "KeyProviderUnavailable", "MissingKek"]
