"""The segmenter emits sentences as soon as they end, never on abbreviations or decimals."""

from __future__ import annotations

from tts_svc.segmenter import Segmenter


def feed(text: str, step: int = 3, **kw: int) -> list[str]:
    seg = Segmenter(**kw)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += seg.push(text[i : i + step])
    tail = seg.flush()
    return out + ([tail] if tail else [])


def test_sentences_stream_out_as_they_complete() -> None:
    seg = Segmenter()
    assert seg.push("Hello there") == []
    assert seg.push(".") == []  # "3." could still become "3.5": the end is certain at the space
    assert seg.push(" How are") == ["Hello there."]
    assert seg.push(" you? I'm fine!\n") == ["How are you?", "I'm fine!"]


def test_abbreviations_initials_decimals_and_times_do_not_split() -> None:
    text = "Dr. Smith sees you at 10:30 on Tuesday. The fee is 3.5 dollars, e.g. cash. J. Doe agrees. Bye."
    assert feed(text) == [
        "Dr. Smith sees you at 10:30 on Tuesday.",
        "The fee is 3.5 dollars, e.g. cash.",
        "J. Doe agrees.",
        "Bye.",
    ]


def test_long_runs_cut_at_clauses_then_spaces() -> None:
    text = (
        "we have openings on monday, tuesday and wednesday mornings, and thursday afternoons too and more "
        * 2
    )
    pieces = feed(text.strip(), clause_chars=60, max_chars=120)
    assert all(len(p) <= 120 for p in pieces)
    assert pieces[0].endswith(",")
    assert " ".join(pieces).split() == text.split()


def test_flush_emits_the_unfinished_rest() -> None:
    seg = Segmenter()
    assert seg.push("No punctuation here") == []
    assert seg.flush() == "No punctuation here"
    assert seg.flush() == ""


def test_the_first_piece_of_a_reply_is_cut_at_its_first_clause() -> None:
    seg = Segmenter()
    assert seg.push("Sure, I can help") == ["Sure,"]
    assert seg.push(" with that, gladly. Next, more. ") == ["I can help with that, gladly.", "Next, more."]
    assert seg.flush() == ""
    assert seg.push("Okay, again. ") == ["Okay,", "again."]  # a flush starts a new reply
