"""Durable call records: an on-disk outbox per gateway process drained to tenant_svc."""

from gateway.records.delivery import INTERRUPTED_REASON, RecordDelivery, RecordSettings
from gateway.records.identity import gateway_credential
from gateway.records.outbox import OutboxFull, OutboxLocked, RecordOutbox, Snapshot, default_outbox_path

__all__ = [
    "INTERRUPTED_REASON",
    "OutboxFull",
    "OutboxLocked",
    "RecordDelivery",
    "RecordOutbox",
    "RecordSettings",
    "Snapshot",
    "default_outbox_path",
    "gateway_credential",
]
