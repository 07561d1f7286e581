"""Agent definitions: what an agent says and how it takes turns, and where they come from.

``AgentCatalog`` resolves an agent id for a tenant. The built-in catalog holds the demo agent;
the tenancy service plugs in behind the same Protocol. A call keeps the ``Agent`` it started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.errors import InvalidArgument, NotFound
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2
from common.providers import KNOWN_PROVIDERS

MAX_PROMPT_CHARS = 32_000
MAX_PHRASE_CHARS = 1_000
DEFAULT_SYSTEM_PROMPT = "You are a helpful phone agent. Keep answers short."


@dataclass(frozen=True, slots=True)
class TurnTakingProfile:
    """Silences and thresholds that decide when the caller's turn is over and when to yield."""

    end_of_turn_silence_ms: int = 500
    incomplete_turn_silence_ms: int = 1500
    min_interruption_ms: int = 400
    min_interruption_words: int = 1
    no_response_budget_ms: int = 3000
    filler_phrase: str = "One moment, please."
    apology_phrase: str = "Sorry, I had a problem there. Could you say that again?"
    turn_timeout_ms: int = 20_000
    # After a tentative interruption (agent paused), resume if no words arrive within this.
    false_interruption_timeout_ms: int = 1200


@dataclass(frozen=True, slots=True)
class Agent:
    """One agent's configuration, frozen for the duration of a call."""

    agent_id: str
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    greeting: str = ""
    voice: str = ""
    language_code: str = "en-US"
    keyterms: tuple[str, ...] = ()
    responder_rules: llm_pb2.ResponderRules = field(default_factory=llm_pb2.ResponderRules)
    turn_taking: TurnTakingProfile = field(default_factory=TurnTakingProfile)
    llm_model: str = ""
    max_tokens: int = 0
    context_token_budget: int = 0  # prompt tokens per turn; 0 = no budget (issue 17)
    # Ordered provider chains (empty = each service's default) and provider-specific models.
    stt_providers: tuple[str, ...] = ()
    llm_providers: tuple[str, ...] = ()
    tts_providers: tuple[str, ...] = ()
    stt_model: str = ""
    tts_model: str = ""
    # E.164 number (or sip: URI) a phone caller may ask to be transferred to; empty for none.
    transfer_number: str = ""
    redact_pii: bool = False  # data protection: PII redaction at the recognizer (and when stored)


class AgentCatalog(Protocol):
    """Where agent configs come from (built-in, or tenant_svc through its cache)."""

    async def get(self, tenant_id: str, agent_id: str) -> Agent: ...


def _intent(keywords: list[str], reply: str) -> llm_pb2.Intent:
    return llm_pb2.Intent(keywords=keywords, reply=reply)


DEMO_AGENT = Agent(
    agent_id="demo",
    system_prompt="You are the receptionist of Bright Smile Dental. Be brief and friendly.",
    greeting="Hello, thanks for calling Bright Smile Dental. How can I help you today?",
    keyterms=("Bright Smile", "cleaning", "appointment"),
    responder_rules=llm_pb2.ResponderRules(
        intents=[
            _intent(
                ["book", "appointment", "cleaning", "schedule", "check-up", "checkup"],
                "Sure, I can help with that. We have an opening next Tuesday at ten in the"
                " morning. Would that work for you?",
            ),
            _intent(
                ["hours", "open", "opening", "close"],
                "We are open Monday to Friday from eight to six, and on Saturday mornings from nine to one.",
            ),
            _intent(
                ["thank", "thanks", "bye", "goodbye"],
                "You're welcome. Have a great day. Goodbye!",
            ),
        ],
        default_reply="I can help you book an appointment or tell you our opening hours."
        " What would you like to do?",
    ),
)


class BuiltinAgentCatalog:
    """Agents known to this gateway process (the demo agent, plus any given at start)."""

    def __init__(self, agents: list[Agent] | None = None) -> None:
        self._agents = {a.agent_id: a for a in [DEMO_AGENT, *(agents or [])]}

    async def get(self, tenant_id: str, agent_id: str) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise NotFound(
                f"agent {agent_id!r} is not known to this gateway; known agents: "
                f"{', '.join(sorted(self._agents))} (or send an inline 'agent' config)"
            )
        return agent


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if value and not low <= value <= high:
        raise InvalidArgument(f"config.agent.turn_taking.{name} must be {low}..{high} ms; got {value}")


def turn_taking_from_proto(tt: gateway_pb2.TurnTaking) -> TurnTakingProfile:
    """An inline config's turn-taking fields, zero meaning the default."""
    d = TurnTakingProfile()
    _check_range("end_of_turn_silence_ms", tt.end_of_turn_silence_ms, 100, 5000)
    _check_range("incomplete_turn_silence_ms", tt.incomplete_turn_silence_ms, 100, 10000)
    _check_range("min_interruption_ms", tt.min_interruption_ms, 50, 5000)
    _check_range("no_response_budget_ms", tt.no_response_budget_ms, 500, 30000)
    _check_range("turn_timeout_ms", tt.turn_timeout_ms, 1000, 120000)
    if tt.min_interruption_words < 0 or tt.min_interruption_words > 10:
        raise InvalidArgument("config.agent.turn_taking.min_interruption_words must be 0..10")
    for name in ("filler_phrase", "apology_phrase"):
        if len(getattr(tt, name)) > MAX_PHRASE_CHARS:
            raise InvalidArgument(f"config.agent.turn_taking.{name} is over {MAX_PHRASE_CHARS} characters")
    end = tt.end_of_turn_silence_ms or d.end_of_turn_silence_ms
    return TurnTakingProfile(
        end_of_turn_silence_ms=end,
        incomplete_turn_silence_ms=max(end, tt.incomplete_turn_silence_ms or d.incomplete_turn_silence_ms),
        min_interruption_ms=tt.min_interruption_ms or d.min_interruption_ms,
        min_interruption_words=tt.min_interruption_words or d.min_interruption_words,
        no_response_budget_ms=tt.no_response_budget_ms or d.no_response_budget_ms,
        filler_phrase=tt.filler_phrase or d.filler_phrase,
        apology_phrase=tt.apology_phrase or d.apology_phrase,
        turn_timeout_ms=tt.turn_timeout_ms or d.turn_timeout_ms,
    )


def _chain(service: str, values: Sequence[str]) -> tuple[str, ...]:
    known = KNOWN_PROVIDERS[service]
    name = f"{service}_providers"
    for v in values:
        if v not in known:
            raise InvalidArgument(f"config.agent.{name}: unknown provider {v[:40]!r}; use {', '.join(known)}")
    return tuple(values)


def _short(name: str, value: str) -> str:
    if len(value) > 200:
        raise InvalidArgument(f"config.agent.{name} is over 200 characters")
    return value


def agent_from_proto(cfg: gateway_pb2.AgentConfig, agent_id: str = "inline") -> Agent:
    """Validate an inline agent config; errors name the field to fix."""
    if len(cfg.system_prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument(f"config.agent.system_prompt is over {MAX_PROMPT_CHARS} characters")
    if len(cfg.greeting) > MAX_PHRASE_CHARS:
        raise InvalidArgument(f"config.agent.greeting is over {MAX_PHRASE_CHARS} characters")
    if len(cfg.keyterms) > 100 or any(len(k) > 100 for k in cfg.keyterms):
        raise InvalidArgument("config.agent.keyterms: at most 100 terms of at most 100 characters")
    if cfg.max_tokens < 0 or cfg.max_tokens > 4096:
        raise InvalidArgument("config.agent.max_tokens must be 0..4096")
    if cfg.context_token_budget and not 256 <= cfg.context_token_budget <= 1_000_000:
        raise InvalidArgument("config.agent.context_token_budget must be 0 (none) or 256..1000000")
    rules = llm_pb2.ResponderRules()
    rules.CopyFrom(cfg.responder_rules)
    return Agent(
        agent_id=agent_id,
        system_prompt=cfg.system_prompt or DEFAULT_SYSTEM_PROMPT,
        greeting=cfg.greeting,
        voice=cfg.voice,
        language_code=cfg.language_code or "en-US",
        keyterms=tuple(cfg.keyterms),
        responder_rules=rules,
        turn_taking=turn_taking_from_proto(cfg.turn_taking),
        llm_model=cfg.llm_model,
        max_tokens=cfg.max_tokens,
        context_token_budget=cfg.context_token_budget,
        stt_providers=_chain("stt", cfg.stt_providers),
        llm_providers=_chain("llm", cfg.llm_providers),
        tts_providers=_chain("tts", cfg.tts_providers),
        stt_model=_short("stt_model", cfg.stt_model),
        tts_model=_short("tts_model", cfg.tts_model),
    )
