"""The quota tiers follow tenant_svc's PlanTier enum (the mapping lives in common/plans.py)."""

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.plans import PLANS, tier_name


def test_every_plan_tier_maps_to_a_declared_tier() -> None:
    assert tier_name(pb.PLAN_TIER_FREE) == "free"
    assert tier_name(pb.PLAN_TIER_PRO) == "pro"
    assert tier_name(pb.PLAN_TIER_ENTERPRISE) == "enterprise"
    assert tier_name(pb.PLAN_TIER_UNSPECIFIED) == "free"
    for value in pb.PlanTier.values():
        assert tier_name(value) in PLANS
