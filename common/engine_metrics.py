"""Per-engine metrics every service records the same way, cloud adapters and local engines alike.

Labels are the service and the engine (provider) name the response names: a bounded set from
the provider registry, never a tenant or call id (per-tenant usage is the ledger's).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_FIRST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)

LLM_TOKENS = Counter(
    "voiceai_llm_tokens_total", "Tokens in (prompt) and out (completion) per engine", ["engine", "direction"]
)
LLM_FIRST_TOKEN = Histogram(
    "voiceai_llm_first_token_seconds",
    "Time from a chat request to the engine's first token",
    ["engine"],
    buckets=_FIRST_BUCKETS,
)
LLM_REPLIES = Counter(
    "voiceai_llm_replies_total", "Completed replies per engine and finish reason", ["engine", "finish"]
)
TTS_CHARACTERS = Counter("voiceai_tts_characters_total", "Characters synthesized per engine", ["engine"])
TTS_FIRST_AUDIO = Histogram(
    "voiceai_tts_first_audio_seconds",
    "Time from a synthesis stream's first text to its first audio",
    ["engine"],
    buckets=_FIRST_BUCKETS,
)
STT_AUDIO_SECONDS = Counter("voiceai_stt_audio_seconds_total", "Caller audio received per engine", ["engine"])
STT_FINALS = Counter("voiceai_stt_finals_total", "Final transcripts per engine", ["engine"])
STT_FINAL_LATENCY = Histogram(
    "voiceai_stt_final_latency_seconds",
    "Time from the end of the audio a final covers to the final leaving the service",
    ["engine"],
    buckets=_FIRST_BUCKETS,
)


def llm_reply(engine: str, finish: str, prompt_tokens: int, completion_tokens: int) -> None:
    """Count one completed reply."""
    LLM_REPLIES.labels(engine, finish).inc()
    LLM_TOKENS.labels(engine, "in").inc(prompt_tokens)
    LLM_TOKENS.labels(engine, "out").inc(completion_tokens)


def final_metrics(engine: str, latency_s: float) -> None:
    """Count one final; ``latency_s`` is how much audio had arrived past the final's end."""
    STT_FINALS.labels(engine).inc()
    STT_FINAL_LATENCY.labels(engine).observe(max(0.0, latency_s))
