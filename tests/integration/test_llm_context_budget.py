"""A 60-turn conversation through llm_svc on the OpenAI double with a context budget: every
prompt OpenAI receives is within the budget by the model's tokenizer, starts with the system
prompt, ends with the last turns verbatim, and the stable prefix comes back as cached tokens."""

from __future__ import annotations

from llm_svc.context_budget import MESSAGE_OVERHEAD, shared_counter
from tests.doubles.openai_api import OpenAIDouble
from tests.integration.test_llm_openai import A, S, U, chat, llm, req

SYSTEM = "You are the receptionist of Bright Smile Dental. Be brief and friendly. " * 3
BUDGET = 700


async def test_sixty_turns_stay_within_the_budget_with_the_last_turns_verbatim() -> None:
    counter = shared_counter("o200k_base")
    await counter.ready()
    history: list[tuple[int, str]] = [(S, SYSTEM)]
    cached_turns = 0
    async with OpenAIDouble(cache_min_tokens=64) as api, llm(api, llm_openai_model="gpt-4o-mini") as stub:
        for turn in range(60):
            history.append((U, f"turn {turn}: is slot {turn} free next week for a cleaning?"))
            text, _, done = await chat(stub, req(*history, context_token_budget=BUDGET))
            sent = api.requests[-1].body["messages"]
            tokens = sum(counter.count(m["content"]) + MESSAGE_OVERHEAD for m in sent)
            assert tokens <= BUDGET, (turn, tokens)
            assert sent[0] == {"role": "system", "content": SYSTEM}
            kept = len(sent) - 1
            assert [m["content"] for m in sent[1:]] == [c for _, c in history[-kept:]]  # the latest, verbatim
            assert sent[-1]["content"] == history[-1][1]
            if any(ln.unit == "cached_input_token" for ln in done.usage.lines):
                cached_turns += 1
            history.append((A, text))
    assert len(history) == 121 and kept < 40  # the budget really cut the history
    assert cached_turns >= 40, cached_turns  # a stable prefix: most turns reuse the cache
