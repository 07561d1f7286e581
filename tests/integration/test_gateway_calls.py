"""Whole calls through the gateway against scripted services: turns, barge-in, endpointing,
never-silent fallbacks and timing."""

from __future__ import annotations

import asyncio

import grpc.aio
import pytest

from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import LlmScript, ScriptedLlm, ScriptedStt, ToneTts, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh

LONG_REPLY = (
    "Let me tell you about all our services. We do cleanings and check-ups. We also do fillings."
    " And we have evening hours on Thursdays. Parking is free behind the building."
)


async def _channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address)


async def test_three_turns_with_greeting_are_timed_and_remembered() -> None:
    stt = ScriptedStt(["hello there.", "what are your hours?", "thanks, goodbye."])
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(ch, inline_config(greeting="Hi, this is the test agent.")) as caller:
            await caller.wait_for(lambda c: c.of("agent_speech"))
            await caller.silence(1500)  # let the greeting finish
            for turn in (1, 2, 3):
                await caller.send_pcm(tone(700))
                await caller.wait_for(caller.turn_done(turn), timeout=10)
            ended = await caller.hangup()

    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP
    assert ended.turns == 3
    texts = caller.agent_texts()
    assert texts[0] == "Hi, this is the test agent."
    assert "You said hello there.." in texts
    assert "You said thanks, goodbye.." in texts
    finals = [
        r.msg.caller_transcript.text
        for r in caller.of("caller_transcript")
        if r.msg.caller_transcript.is_final
    ]
    assert finals == ["hello there.", "what are your hours?", "thanks, goodbye."]
    # The third LLM request carries the whole conversation, greeting included.
    last = mesh.llm.script.requests[-1]
    roles = [m.role for m in last.messages]
    assert roles[:3] == [llm_pb2.ROLE_SYSTEM, llm_pb2.ROLE_ASSISTANT, llm_pb2.ROLE_USER]
    assert [m.content for m in last.messages if m.role == llm_pb2.ROLE_USER] == finals
    for m in caller.of("turn_metrics"):
        t = m.msg.turn_metrics
        assert 0 <= t.stt_final_ms <= t.end_of_turn_ms <= t.llm_first_token_ms
        assert t.llm_first_token_ms <= t.tts_first_audio_ms <= t.first_audio_out_ms < 2000
        assert t.end_of_turn_ms >= 400  # waited for the configured end-of-turn silence
        assert not t.interrupted
    assert ended.usage.stt_seconds > 3
    assert ended.usage.llm_completion_tokens > 0 and ended.usage.tts_characters > 0
    assert mesh.open_streams() == 0


async def test_barge_in_cuts_the_agent_and_history_keeps_only_what_was_heard() -> None:
    stt = ScriptedStt(["tell me everything.", "wait, stop please.", "ok what about parking?"])
    llm = ScriptedLlm(
        LlmScript(reply=lambda user: LONG_REPLY if "everything" in user else f"You said {user}")
    )
    async with (
        scripted_mesh(stt, llm, ToneTts(ms_per_char=40)) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, inline_config()) as caller:
            await caller.send_pcm(tone(700))
            await caller.wait_for(lambda c: c.of("agent_speech"))
            await caller.silence(600)
            await caller.send_pcm(tone(900))  # "wait, stop please." over the agent
            clear = await caller.wait_for(lambda c: c.of("clear"), timeout=5)
            await caller.wait_for(caller.turn_done(2), timeout=10)
            await caller.hangup()

    assert clear
    t1 = caller.turn_done(1)(caller).msg.turn_metrics  # type: ignore[union-attr]
    assert t1.interrupted
    # Agent audio stops right after the clear: at most the frames already in flight.
    clear_at = caller.of("clear")[0].at
    late_audio = [r for r in caller.of("audio") if r.at > clear_at + 0.1 and r.at < clear_at + 0.6]
    assert len(late_audio) == 0
    second = mesh.llm.script.requests[1]
    agent_msgs = [m for m in second.messages if m.role == llm_pb2.ROLE_ASSISTANT]
    assert len(agent_msgs) == 1 and agent_msgs[0].interrupted
    heard = agent_msgs[0].content
    assert heard and LONG_REPLY.startswith(heard.rstrip(".")[:20]) and len(heard) < len(LONG_REPLY) * 0.7
    assert [m.content for m in second.messages if m.role == llm_pb2.ROLE_USER][-1] == "wait, stop please."


@pytest.mark.parametrize("utterance", ["uh-huh", "okay.", "yeah right"])
async def test_backchannel_does_not_interrupt(utterance: str) -> None:
    stt = ScriptedStt(["tell me everything.", utterance])
    llm = ScriptedLlm(LlmScript(reply=lambda user: LONG_REPLY))
    async with (
        scripted_mesh(stt, llm, ToneTts(ms_per_char=25)) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, inline_config()) as caller:
            await caller.send_pcm(tone(700))
            await caller.wait_for(lambda c: c.of("agent_speech"))
            await caller.silence(300)
            await caller.send_pcm(tone(500))
            await caller.wait_for(caller.turn_done(1), timeout=15)
            await caller.silence(700)
            await caller.hangup()
    assert not caller.of("clear")
    assert not caller.turn_done(1)(caller).msg.turn_metrics.interrupted  # type: ignore[union-attr]
    assert not caller.turn_done(2)(caller)  # the backchannel did not become a turn
    assert " ".join(caller.agent_texts()) == LONG_REPLY
    assert len(mesh.llm.script.requests) == 1


async def test_noise_pauses_then_the_agent_resumes() -> None:
    stt = ScriptedStt(["tell me everything.", ""])  # the second burst has no words
    llm = ScriptedLlm(LlmScript(reply=lambda user: LONG_REPLY))
    async with (
        scripted_mesh(stt, llm, ToneTts(ms_per_char=25)) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        config = inline_config(min_interruption_ms=200)
        async with ConverseCaller(ch, config) as caller:
            await caller.send_pcm(tone(700))
            await caller.wait_for(lambda c: c.of("agent_speech"))
            await caller.silence(200)
            before = caller.audio_bytes()
            await caller.send_pcm(tone(800))
            during = caller.audio_bytes()
            await caller.wait_for(caller.turn_done(1), timeout=20)
            await caller.hangup()
    assert not caller.of("clear")
    # Paused while the noise lasted (well under 40 frames of 20 ms arrived in 800 ms)...
    frame = 640
    assert (during - before) / frame < 30
    # ...and every sentence was still spoken in the end.
    assert " ".join(caller.agent_texts()) == LONG_REPLY
    assert not caller.turn_done(1)(caller).msg.turn_metrics.interrupted  # type: ignore[union-attr]


async def test_caller_trailing_off_mid_number_is_not_cut_off() -> None:
    stt = ScriptedStt(["my number is 555 12", "34 56.", "hello there.", "how are you?"])
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(
            ch, inline_config(end_of_turn_silence_ms=500, incomplete_turn_silence_ms=1600)
        ) as caller:
            await caller.send_pcm(tone(600))
            await caller.silence(900)  # a pause longer than end_of_turn but shorter than incomplete
            await caller.send_pcm(tone(400))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            await caller.silence(300)
            await caller.send_pcm(tone(600))
            await caller.silence(900)  # the same pause after a complete sentence ends the turn
            await caller.send_pcm(tone(400))
            await caller.wait_for(caller.turn_done(3), timeout=10)
            await caller.hangup()
    users = [m.content for m in mesh.llm.script.requests[-1].messages if m.role == llm_pb2.ROLE_USER]
    assert users == ["my number is 555 12 34 56.", "hello there.", "how are you?"]


async def test_slow_llm_gets_a_filler_and_a_stuck_one_an_apology() -> None:
    stt = ScriptedStt(["slow question?", "stuck question?", "normal question?"])
    script = LlmScript(first_token_delay_s=1.2)
    llm = ScriptedLlm(script)
    async with scripted_mesh(stt, llm) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        config = inline_config(
            no_response_budget_ms=600, filler_phrase="Hmm, let me check.", apology_phrase="Sorry about that."
        )
        async with ConverseCaller(ch, config) as caller:
            await caller.silence(400)  # let the fallback phrases be prepared
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            script.hang = True
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(2), timeout=10)
            script.hang = False
            script.first_token_delay_s = 0
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(3), timeout=10)
            await caller.hangup()
    t1 = caller.turn_done(1)(caller).msg.turn_metrics  # type: ignore[union-attr]
    t2 = caller.turn_done(2)(caller).msg.turn_metrics  # type: ignore[union-attr]
    assert t1.filler_spoken and t1.first_audio_out_ms < 1000
    texts = caller.agent_texts()
    assert texts.count("Hmm, let me check.") == 2
    assert "You said slow question?." in texts
    assert "Sorry about that." in texts
    assert t2.filler_spoken
    assert "You said normal question?." in texts
    assert mesh.open_streams() == 0


async def test_llm_failure_mid_turn_apologises_and_the_call_goes_on() -> None:
    stt = ScriptedStt(["first?", "second?"])
    script = LlmScript(reply=lambda u: "One. Two. Three. Four.", fail_after_tokens=2)
    async with scripted_mesh(stt, ScriptedLlm(script)) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(ch, inline_config(apology_phrase="Sorry, say again?")) as caller:
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            script.fail_after_tokens = None
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(2), timeout=10)
            ended = await caller.hangup()
    assert "Sorry, say again?" in caller.agent_texts()
    assert caller.agent_texts()[-1] == "Four."
    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP
    assert mesh.open_streams() == 0


async def test_dtmf_is_heard_as_a_turn() -> None:
    stt = ScriptedStt([])
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(ch, inline_config()) as caller:
            await caller.call.write(gateway_pb2.ConverseRequest(dtmf="12#"))
            await caller.wait_for(caller.turn_done(1), timeout=5)
            await caller.hangup()
    users = [m.content for m in mesh.llm.script.requests[0].messages if m.role == llm_pb2.ROLE_USER]
    assert users == ["(the caller pressed 1 2 #)"]


async def test_caller_vanishing_mid_turn_cancels_every_downstream_stream() -> None:
    stt = ScriptedStt(["tell me everything."])
    llm = ScriptedLlm(LlmScript(reply=lambda u: LONG_REPLY, token_delay_s=0.2))
    async with scripted_mesh(stt, llm) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        baseline = set(asyncio.all_tasks())
        caller = ConverseCaller(ch, inline_config())
        async with caller:
            await caller.send_pcm(tone(700))
            await caller.wait_for(lambda c: c.of("agent_speech"))
            assert mesh.llm.streams.open == 1 and mesh.tts.streams.open == 1 and mesh.stt.streams.open == 1
        # the client is gone (cancelled without hangup)
        for _ in range(50):
            if mesh.open_streams() == 0:
                break
            await asyncio.sleep(0.02)
        assert mesh.open_streams() == 0, "downstream streams still open 1 s after the caller vanished"
        await asyncio.sleep(0.1)
        leaked = [t for t in asyncio.all_tasks() - baseline if not t.done() and ":" in t.get_name()]
        assert leaked == []
        assert len(mesh.app.servicer._store) == 0  # type: ignore[attr-defined]


async def test_tts_failure_mid_turn_apologises_and_the_call_goes_on() -> None:
    stt = ScriptedStt(["first?", "second?"])
    tts = ToneTts()
    tts.fail_on = "Three."
    script = LlmScript(reply=lambda u: "One. Two. Three. Four.")
    async with (
        scripted_mesh(stt, ScriptedLlm(script), tts) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, inline_config(apology_phrase="Sorry, say again?")) as caller:
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            tts.fail_on = None
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(2), timeout=10)
            ended = await caller.hangup()
    texts = caller.agent_texts()
    assert "Sorry, say again?" in texts and "Three." not in texts[: texts.index("Sorry, say again?")]
    assert texts[-1] == "Four."  # the next turn is spoken in full
    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP
    assert mesh.open_streams() == 0


async def test_stt_stream_failure_mid_call_is_reopened_and_the_call_goes_on() -> None:
    stt = ScriptedStt(["before the failure.", "after the failure."])
    stt.fail_after_ms = 2500  # the recognition stream dies 2.5 s into the call
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(ch, inline_config()) as caller:
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            await caller.silence(2500)  # the scripted failure happens in here
            stt.fail_after_ms = None
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(2), timeout=10)
            ended = await caller.hangup()
    assert stt.streams.total == 2  # one reopen
    users = [m.content for m in mesh.llm.script.requests[-1].messages if m.role == llm_pb2.ROLE_USER]
    assert users == ["before the failure.", "after the failure."]
    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP


async def test_the_agents_provider_chains_reach_every_service() -> None:
    stt = ScriptedStt(["hello there."])
    config = inline_config(greeting="Hi.")
    config.agent.stt_providers[:] = ["deepgram", "local"]
    config.agent.llm_providers[:] = ["openai", "local"]
    config.agent.tts_providers[:] = ["elevenlabs", "deepgram", "local"]
    config.agent.stt_model = "nova-3"
    config.agent.tts_model = "eleven_flash_v2_5"
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(ch, config) as caller:
            await caller.wait_for(lambda c: c.of("agent_speech"))
            await caller.send_pcm(tone(700))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            await caller.hangup()
    assert [(c.providers, c.model) for c in mesh.stt.configs] == [(["deepgram", "local"], "nova-3")]
    assert {tuple(r.providers) for r in mesh.llm.script.requests} == {("openai", "local")}
    assert {(tuple(c.providers), c.model) for c in mesh.tts.configs} == {
        (("elevenlabs", "deepgram", "local"), "eleven_flash_v2_5")
    }
