"""Mid-call failover against doubles on loopback: an STT instance that dies mid-utterance, an LLM
or TTS instance that fails before the caller heard the reply."""

from __future__ import annotations

import grpc.aio

from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import LlmScript, ScriptedLlm, ScriptedStt, ToneTts, tone
from tests.doubles.tone_words import ToneWordsStt, speak
from tests.integration.failover_harness import failovers, multi_mesh
from tests.integration.gateway_harness import inline_config

FIRST = ["alpha", "bravo", "charlie"]
SECOND = ["delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def finals(caller: ConverseCaller) -> list[str]:
    return [
        r.msg.caller_transcript.text
        for r in caller.of("caller_transcript")
        if r.msg.caller_transcript.is_final
    ]


def user_turns(llm: ScriptedLlm) -> list[str]:
    return [m.content for m in llm.script.requests[-1].messages if m.role == llm_pb2.ROLE_USER]


async def test_stt_instance_dying_mid_utterance_is_replaced_and_no_word_is_lost() -> None:
    llm = ScriptedLlm()
    async with (
        multi_mesh([ToneWordsStt(), ToneWordsStt()], [llm], [ToneTts()]) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        before = failovers("stt")
        async with ConverseCaller(ch, inline_config()) as caller:
            await caller.send_pcm(speak(FIRST))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            await caller.silence(300)
            first = mesh.serving("stt")
            second_words = speak(SECOND)
            half = len(second_words) // 2 // 640 * 640  # mid-word, on a frame boundary
            await caller.send_pcm(second_words[:half])
            await first.kill()  # the instance dies in the middle of the caller's sentence
            await caller.send_pcm(second_words[half:])
            await caller.wait_for(caller.turn_done(2), timeout=10)
            ended = await caller.hangup()
        other = next(i for i in mesh.instances["stt"] if i is not first)

    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP and ended.turns == 2
    # Each sentence transcribed once and whole: the replayed audio made up for the dead stream.
    assert finals(caller) == [" ".join(FIRST), " ".join(SECOND)]
    assert other.servicer.finals == [" ".join(SECOND)]  # the first sentence was not sent again
    assert user_turns(llm) == [" ".join(FIRST), " ".join(SECOND)]
    assert f"You said {' '.join(SECOND)}." in caller.agent_texts()
    assert failovers("stt") == before + 1
    t2 = caller.turn_done(2)(caller).msg.turn_metrics  # type: ignore[union-attr]
    # Offsets of the new stream were moved onto the call's timeline: the turn is timed from
    # when the caller really stopped, so its stages are in the usual range.
    assert 0 <= t2.stt_final_ms <= t2.end_of_turn_ms < 1500


async def test_stt_failover_before_any_final_replays_from_the_call_start() -> None:
    async with (
        multi_mesh([ToneWordsStt(), ToneWordsStt()], [ScriptedLlm()], [ToneTts()]) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, inline_config()) as caller:
            words = speak(SECOND)
            await caller.send_pcm(words[: 640 * 30])
            await mesh.serving("stt").kill()
            await caller.send_pcm(words[640 * 30 :])
            await caller.wait_for(caller.turn_done(1), timeout=10)
            await caller.hangup()
    assert finals(caller) == [" ".join(SECOND)]


async def test_llm_failing_before_its_first_token_is_answered_by_another_instance() -> None:
    broken = ScriptedLlm(LlmScript(fail_after_tokens=0))  # aborts before the first token
    healthy = ScriptedLlm()
    async with (
        multi_mesh([ScriptedStt(["first?", "second?"])], [broken, healthy], [ToneTts()]) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        before = failovers("llm")
        config = inline_config(apology_phrase="Sorry, say again?")
        async with ConverseCaller(ch, config) as caller:
            for turn in (1, 2):  # the pool alternates, so one of the turns goes to the broken one
                await caller.send_pcm(tone(600))
                await caller.wait_for(caller.turn_done(turn), timeout=10)
            await caller.hangup()
        open_streams = sum(i.servicer.streams.open for insts in mesh.instances.values() for i in insts)
    texts = caller.agent_texts()
    assert texts == ["You said first?.", "You said second?."]
    assert broken.streams.total == 1 and healthy.streams.total == 2
    assert failovers("llm") == before + 1
    assert open_streams == 0


async def test_tts_failing_before_any_audio_is_retried_on_another_instance() -> None:
    broken, healthy = ToneTts(), ToneTts()
    broken.fail_on = "You said"  # fails on the reply's first sentence, before any audio
    llm = ScriptedLlm(LlmScript(reply=lambda u: f"You said {u}. Anything else?"))
    async with (
        multi_mesh([ScriptedStt(["first?", "second?"])], [llm], [broken, healthy]) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        before = failovers("tts")
        async with ConverseCaller(ch, inline_config(apology_phrase="Sorry, say again?")) as caller:
            for turn in (1, 2):
                await caller.send_pcm(tone(600))
                await caller.wait_for(caller.turn_done(turn), timeout=10)
            await caller.hangup()
    texts = caller.agent_texts()
    assert "Sorry, say again?" not in texts
    assert texts.count("You said first?.") == 1 and texts.count("You said second?.") == 1
    assert texts.count("Anything else?") == 2
    assert failovers("tts") - before >= 1
    assert llm.streams.total == 2 + int(failovers("tts") - before)  # a retry asks the LLM again


async def test_a_failure_after_the_caller_heard_part_of_the_reply_is_not_retried() -> None:
    broken, healthy = ToneTts(), ToneTts()
    broken.fail_on = "Three."
    healthy.fail_on = "Three."
    llm = ScriptedLlm(LlmScript(reply=lambda u: "One. Two. Three. Four.", token_delay_s=0.05))
    async with (
        multi_mesh([ScriptedStt(["first?"])], [llm], [broken, healthy]) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        before = failovers("tts")
        async with ConverseCaller(ch, inline_config(apology_phrase="Sorry, say again?")) as caller:
            await caller.send_pcm(tone(600))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            await caller.hangup()
        assert mesh.instances["llm"][0].servicer.streams.total == 1
    assert caller.agent_texts()[0] == "One."
    assert "Sorry, say again?" in caller.agent_texts()
    assert failovers("tts") == before
