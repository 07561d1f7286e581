"""The segmenter emits sentences as soon as they end, never on abbreviations, decimals or times."""

from __future__ import annotations

import re

import pytest

from tts_svc.segmenter import Segmenter


def feed(text: str, step: int = 3, **kw: int) -> list[str]:
    """``text`` pushed ``step`` characters at a time, then flushed."""
    return feed_tokens([text[i : i + step] for i in range(0, len(text), step)], **kw)


def llm_tokens(text: str) -> list[str]:
    """Text cut the way LLM tokenizers cut it: a word with its leading space, punctuation apart."""
    return re.findall(r"\s*[A-Za-z']+|\s*\d+|\s*[^\sA-Za-z'\d]", text)


def feed_tokens(tokens: list[str], **kw: int) -> list[str]:
    seg = Segmenter(**kw)
    out: list[str] = []
    for token in tokens:
        out += seg.push(token)
    tail = seg.flush()
    return out + ([tail] if tail else [])


def test_sentences_stream_out_as_they_complete() -> None:
    seg = Segmenter()
    assert seg.push("Hello there") == []
    assert seg.push(".") == []  # "3." could still become "3.5"
    assert seg.push(" How are") == ["Hello there."]
    assert seg.push(" you? I'm fine!\n") == ["How are you?", "I'm fine!"]
    assert seg.push("Ok") == [] and seg.pending == 2


def test_a_whole_sentence_with_its_trailing_space_is_spoken_at_once() -> None:
    seg = Segmenter()
    assert seg.push("Hello there. ") == ["Hello there."]
    assert seg.push("Please ask Dr. ") == []  # a title still waits for the name
    assert seg.push("Smith. ") == ["Please ask Dr. Smith."]


def test_the_next_word_decides_when_it_comes_with_the_space() -> None:
    seg = Segmenter()
    assert seg.push("Come at 9 a.m.") == []
    assert seg.push(" tomorrow") == []
    assert seg.push(" or at 5 p.m.") == []
    assert seg.push(" Thanks") == ["Come at 9 a.m. tomorrow or at 5 p.m."]


def test_question_and_exclamation_marks_end_at_the_space() -> None:
    seg = Segmenter()
    assert seg.push("Really? ") == ["Really?"]
    assert seg.push("Yes! ") == ["Yes!"]


@pytest.mark.parametrize("split", ["llm", "whole"])
def test_abbreviations_initials_decimals_and_times_do_not_split(split: str) -> None:
    text = (
        "Dr. Smith sees you at 10:30 on Tuesday. The fee is 3.5 dollars, e.g. cash. J. Doe agrees. "
        "Come at 9 a.m. tomorrow, room No. 5 on St. James street. So did I. Bye."
    )
    assert feed_tokens(llm_tokens(text) if split == "llm" else [text]) == [
        "Dr. Smith sees you at 10:30 on Tuesday.",
        "The fee is 3.5 dollars, e.g. cash.",
        "J. Doe agrees.",
        "Come at 9 a.m. tomorrow, room No. 5 on St. James street.",
        "So did I.",
        "Bye.",
    ]


def test_a_no_that_ends_a_sentence_still_ends_it() -> None:
    assert feed("Sorry, no. I cannot do that.", 4) == ["Sorry,", "no.", "I cannot do that."]


def test_newline_ends_a_piece_without_punctuation() -> None:
    seg = Segmenter()
    assert seg.push("Opening hours\nMonday") == ["Opening hours"]
    assert seg.flush() == "Monday"


def test_long_runs_cut_at_clauses_after_about_n_characters() -> None:
    text = (
        "we have openings on monday, tuesday and wednesday mornings; and thursday afternoons too "
        "— and more on friday, saturday or sunday if you prefer and would like to come then"
    )
    pieces = feed(text, clause_chars=60, max_chars=240)
    assert len(pieces) >= 3
    assert pieces[0] == "we have openings on monday,"  # the first clause of a reply goes at once
    assert all(len(p) <= 90 for p in pieces[:-1])
    assert all(p[-1] in ",;—" for p in pieces[:-1])
    assert " ".join(pieces).split() == text.split()


def test_runs_without_any_boundary_cut_at_a_space_by_max_chars() -> None:
    text = "word " * 100
    pieces = feed(text, clause_chars=60, max_chars=120)
    assert all(len(p) <= 120 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_unspaced_em_dash_is_a_clause_boundary() -> None:
    seg = Segmenter()
    assert seg.push("I can help—just tell me") == ["I can help—"]


def test_flush_emits_the_unfinished_rest() -> None:
    seg = Segmenter()
    assert seg.push("No punctuation here") == []
    assert seg.flush() == "No punctuation here"
    assert seg.flush() == ""
    assert seg.pending == 0


def test_the_first_piece_of_a_reply_is_cut_at_its_first_clause() -> None:
    seg = Segmenter()
    assert seg.push("Sure, I can help") == ["Sure,"]
    assert seg.push(" with that, gladly. Next, more. ") == ["I can help with that, gladly.", "Next, more."]
    assert seg.push("Then") == []
    assert seg.flush() == "Then"
    assert seg.push("Okay, again. And") == ["Okay,", "again."]  # a flush starts a new reply


def test_numbers_with_commas_and_times_are_not_clauses() -> None:
    seg = Segmenter()
    assert seg.push("It costs 1,500 dollars at 10:30") == []
    assert seg.push(" today. Thanks") == ["It costs 1,500 dollars at 10:30 today."]


def test_any_split_of_the_text_keeps_every_word_exactly_once() -> None:
    import random

    text = (
        "Hi! I'm calling about order No. 5, placed on Jan. 3 at 10:30 a.m. The total was $3.50; "
        "is that right? Dr. J. Smith said so... Thanks — bye.\nNew line here, and a long tail "
        "without any punctuation that just keeps going and going for a while longer than usual"
    )
    rng = random.Random(7)
    for _ in range(500):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 40)))
        tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        pieces = feed_tokens(tokens, clause_chars=50, max_chars=100)
        assert all(p and p == p.strip() and len(p) <= 100 for p in pieces)
        assert " ".join(pieces).split() == text.split()


def test_one_huge_message_still_comes_out_in_bounded_pieces() -> None:
    text = ("word " * 600).strip() + ", then a clause. " + "More words here " * 50
    pieces = feed_tokens([text], max_chars=240)
    assert all(len(p) <= 240 for p in pieces)
    assert " ".join(pieces).split() == text.split()
