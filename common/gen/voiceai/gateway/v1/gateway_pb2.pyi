from common.gen.voiceai.common.v1 import audio_pb2 as _audio_pb2
from common.gen.voiceai.common.v1 import usage_pb2 as _usage_pb2
from common.gen.voiceai.llm.v1 import llm_pb2 as _llm_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_CALLER_HANGUP: _ClassVar[EndReason]
    END_REASON_SERVICE_ERROR: _ClassVar[EndReason]
    END_REASON_INVALID_INPUT: _ClassVar[EndReason]
    END_REASON_MAX_DURATION: _ClassVar[EndReason]
    END_REASON_SHUTDOWN: _ClassVar[EndReason]
    END_REASON_TRANSFERRED: _ClassVar[EndReason]
    END_REASON_QUOTA: _ClassVar[EndReason]
END_REASON_UNSPECIFIED: EndReason
END_REASON_CALLER_HANGUP: EndReason
END_REASON_SERVICE_ERROR: EndReason
END_REASON_INVALID_INPUT: EndReason
END_REASON_MAX_DURATION: EndReason
END_REASON_SHUTDOWN: EndReason
END_REASON_TRANSFERRED: EndReason
END_REASON_QUOTA: EndReason

class ConverseRequest(_message.Message):
    __slots__ = ("config", "audio", "dtmf", "hangup")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    DTMF_FIELD_NUMBER: _ClassVar[int]
    HANGUP_FIELD_NUMBER: _ClassVar[int]
    config: CallConfig
    audio: bytes
    dtmf: str
    hangup: Hangup
    def __init__(self, config: _Optional[_Union[CallConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., dtmf: _Optional[str] = ..., hangup: _Optional[_Union[Hangup, _Mapping]] = ...) -> None: ...

class CallConfig(_message.Message):
    __slots__ = ("agent_id", "agent", "caller_audio_format")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CALLER_AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent: AgentConfig
    caller_audio_format: _audio_pb2.AudioFormat
    def __init__(self, agent_id: _Optional[str] = ..., agent: _Optional[_Union[AgentConfig, _Mapping]] = ..., caller_audio_format: _Optional[_Union[_audio_pb2.AudioFormat, _Mapping]] = ...) -> None: ...

class AgentConfig(_message.Message):
    __slots__ = ("system_prompt", "greeting", "voice", "language_code", "keyterms", "responder_rules", "turn_taking", "llm_model", "max_tokens", "stt_providers", "llm_providers", "tts_providers", "stt_model", "tts_model", "context_token_budget")
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    GREETING_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    KEYTERMS_FIELD_NUMBER: _ClassVar[int]
    RESPONDER_RULES_FIELD_NUMBER: _ClassVar[int]
    TURN_TAKING_FIELD_NUMBER: _ClassVar[int]
    LLM_MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STT_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    LLM_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    TTS_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    STT_MODEL_FIELD_NUMBER: _ClassVar[int]
    TTS_MODEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    system_prompt: str
    greeting: str
    voice: str
    language_code: str
    keyterms: _containers.RepeatedScalarFieldContainer[str]
    responder_rules: _llm_pb2.ResponderRules
    turn_taking: TurnTaking
    llm_model: str
    max_tokens: int
    stt_providers: _containers.RepeatedScalarFieldContainer[str]
    llm_providers: _containers.RepeatedScalarFieldContainer[str]
    tts_providers: _containers.RepeatedScalarFieldContainer[str]
    stt_model: str
    tts_model: str
    context_token_budget: int
    def __init__(self, system_prompt: _Optional[str] = ..., greeting: _Optional[str] = ..., voice: _Optional[str] = ..., language_code: _Optional[str] = ..., keyterms: _Optional[_Iterable[str]] = ..., responder_rules: _Optional[_Union[_llm_pb2.ResponderRules, _Mapping]] = ..., turn_taking: _Optional[_Union[TurnTaking, _Mapping]] = ..., llm_model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., stt_providers: _Optional[_Iterable[str]] = ..., llm_providers: _Optional[_Iterable[str]] = ..., tts_providers: _Optional[_Iterable[str]] = ..., stt_model: _Optional[str] = ..., tts_model: _Optional[str] = ..., context_token_budget: _Optional[int] = ...) -> None: ...

class TurnTaking(_message.Message):
    __slots__ = ("end_of_turn_silence_ms", "incomplete_turn_silence_ms", "min_interruption_ms", "min_interruption_words", "no_response_budget_ms", "filler_phrase", "apology_phrase", "turn_timeout_ms")
    END_OF_TURN_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    INCOMPLETE_TURN_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERRUPTION_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERRUPTION_WORDS_FIELD_NUMBER: _ClassVar[int]
    NO_RESPONSE_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    FILLER_PHRASE_FIELD_NUMBER: _ClassVar[int]
    APOLOGY_PHRASE_FIELD_NUMBER: _ClassVar[int]
    TURN_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    end_of_turn_silence_ms: int
    incomplete_turn_silence_ms: int
    min_interruption_ms: int
    min_interruption_words: int
    no_response_budget_ms: int
    filler_phrase: str
    apology_phrase: str
    turn_timeout_ms: int
    def __init__(self, end_of_turn_silence_ms: _Optional[int] = ..., incomplete_turn_silence_ms: _Optional[int] = ..., min_interruption_ms: _Optional[int] = ..., min_interruption_words: _Optional[int] = ..., no_response_budget_ms: _Optional[int] = ..., filler_phrase: _Optional[str] = ..., apology_phrase: _Optional[str] = ..., turn_timeout_ms: _Optional[int] = ...) -> None: ...

class Hangup(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("audio", "call_started", "caller_transcript", "agent_speech", "turn_metrics", "clear", "call_ended")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CALL_STARTED_FIELD_NUMBER: _ClassVar[int]
    CALLER_TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_SPEECH_FIELD_NUMBER: _ClassVar[int]
    TURN_METRICS_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    CALL_ENDED_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    call_started: CallStarted
    caller_transcript: CallerTranscript
    agent_speech: AgentSpeech
    turn_metrics: TurnMetrics
    clear: Clear
    call_ended: CallEnded
    def __init__(self, audio: _Optional[bytes] = ..., call_started: _Optional[_Union[CallStarted, _Mapping]] = ..., caller_transcript: _Optional[_Union[CallerTranscript, _Mapping]] = ..., agent_speech: _Optional[_Union[AgentSpeech, _Mapping]] = ..., turn_metrics: _Optional[_Union[TurnMetrics, _Mapping]] = ..., clear: _Optional[_Union[Clear, _Mapping]] = ..., call_ended: _Optional[_Union[CallEnded, _Mapping]] = ...) -> None: ...

class CallStarted(_message.Message):
    __slots__ = ("call_id", "agent_id")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    agent_id: str
    def __init__(self, call_id: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class CallerTranscript(_message.Message):
    __slots__ = ("text", "is_final", "turn")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    text: str
    is_final: bool
    turn: int
    def __init__(self, text: _Optional[str] = ..., is_final: _Optional[bool] = ..., turn: _Optional[int] = ...) -> None: ...

class AgentSpeech(_message.Message):
    __slots__ = ("text", "turn")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    text: str
    turn: int
    def __init__(self, text: _Optional[str] = ..., turn: _Optional[int] = ...) -> None: ...

class Clear(_message.Message):
    __slots__ = ("turn",)
    TURN_FIELD_NUMBER: _ClassVar[int]
    turn: int
    def __init__(self, turn: _Optional[int] = ...) -> None: ...

class TurnMetrics(_message.Message):
    __slots__ = ("turn", "stt_final_ms", "end_of_turn_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_audio_out_ms", "interrupted", "filler_spoken")
    TURN_FIELD_NUMBER: _ClassVar[int]
    STT_FINAL_MS_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_MS_FIELD_NUMBER: _ClassVar[int]
    LLM_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TTS_FIRST_AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_AUDIO_OUT_MS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    FILLER_SPOKEN_FIELD_NUMBER: _ClassVar[int]
    turn: int
    stt_final_ms: int
    end_of_turn_ms: int
    llm_first_token_ms: int
    tts_first_audio_ms: int
    first_audio_out_ms: int
    interrupted: bool
    filler_spoken: bool
    def __init__(self, turn: _Optional[int] = ..., stt_final_ms: _Optional[int] = ..., end_of_turn_ms: _Optional[int] = ..., llm_first_token_ms: _Optional[int] = ..., tts_first_audio_ms: _Optional[int] = ..., first_audio_out_ms: _Optional[int] = ..., interrupted: _Optional[bool] = ..., filler_spoken: _Optional[bool] = ...) -> None: ...

class CallEnded(_message.Message):
    __slots__ = ("reason", "message", "usage", "turns")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    reason: EndReason
    message: str
    usage: _usage_pb2.Usage
    turns: int
    def __init__(self, reason: _Optional[_Union[EndReason, str]] = ..., message: _Optional[str] = ..., usage: _Optional[_Union[_usage_pb2.Usage, _Mapping]] = ..., turns: _Optional[int] = ...) -> None: ...
