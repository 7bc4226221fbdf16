import pytest

from papa_core.errors import FeedbackError
from papa_core.feedback import parse_feedback, ratings_to_feedback


def test_parse_symbols():
    assert parse_feedback("+ - 0 +", 4) == [1, -1, 0, 1]
    assert parse_feedback("+-0+", 4) == [1, -1, 0, 1]
    assert parse_feedback("0.5, -1, 👍", 3) == [0.5, -1, 1]


@pytest.mark.parametrize("text,n,match", [("+ -", 3, "2 feedback symbols for a batch of 3"),
                                          ("+ ? -", 3, "unknown feedback symbol '\\?'"),
                                          ("2 + -", 3, "outside"), ("", 1, "0 feedback symbols")])
def test_parse_errors(text, n, match):
    with pytest.raises(FeedbackError, match=match):
        parse_feedback(text, n)


def test_ratings():
    assert ratings_to_feedback([1, 3, 5], 5) == [-1.0, 0.0, 1.0]
    with pytest.raises(FeedbackError):
        ratings_to_feedback([6], 5)
