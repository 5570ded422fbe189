import pytest

from aegis.decode import Limits, decode, items
from aegis.errors import MalformedInput

LIMITS = Limits(max_body_bytes=10_000, max_depth=8, max_items=50)


def test_utf8_bom_is_tolerated():
    assert decode(b'\xef\xbb\xbf{"a": 1}', LIMITS) == {"a": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"x" * 10_001, "exceeds the limit"),
        (b'{"a": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"a": ', "malformed JSON"),
        (b"", "malformed JSON"),
        (b'{"a": NaN}', "malformed JSON"),
        (b"[" * 9 + b"]" * 9, "nesting deeper than 8"),
        (b"[" * 5000 + b"]" * 5000, "nesting deeper than 8"),
    ],
)
def test_bad_bodies_say_why(body, reason):
    with pytest.raises(MalformedInput, match=reason):
        decode(body, LIMITS)


def test_depth_at_the_limit_is_fine():
    assert decode(b"[" * 8 + b"]" * 8, LIMITS)


def test_depth_is_the_deepest_branch_of_objects_and_arrays_whatever_lies_beside_it():
    def nested(depth: int) -> bytes:  # objects and arrays in turn: {"k": [{"k": [...]}]}
        body = b"1"
        for n in range(depth):
            body = b'{"k": %s, "w": "x"}' % body if n % 2 else b"[%s, 2]" % body
        return body

    wide = b'{"records": [%s]}' % b",".join([nested(2)] * 40)
    assert decode(nested(8), LIMITS)
    assert decode(wide, LIMITS)
    with pytest.raises(MalformedInput, match="nesting deeper than 8"):
        decode(nested(9), LIMITS)
    with pytest.raises(MalformedInput, match="nesting deeper than 8"):
        decode(b'{"a": [%s, %s]}' % (nested(2), nested(7)), LIMITS)  # the deep branch second, beside a shallow one


def test_items_of_each_shape_carry_their_pointer():
    assert list(items({"records": [{"a": 1}, {"b": 2}]}, LIMITS)) == [
        ("/records/0", {"a": 1}),
        ("/records/1", {"b": 2}),
    ]
    assert list(items([{"a": 1}, 5], LIMITS)) == [("/0", {"a": 1}), ("/1", 5)]
    assert list(items({"SystemAlertId": "x"}, LIMITS)) == [("", {"SystemAlertId": "x"})]
    assert list(items({"value": [{"a": 1}]}, LIMITS)) == [("/value/0", {"a": 1})]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"records": {"a": 1}}, "'records' is an object, not a list"),
        ({"records": None}, "'records' is null, not a list"),
        ("just a string", "body is a string"),
        (42, "body is a number"),
        ([{}] * 51, "more than the limit of 50"),
    ],
)
def test_wrong_shapes_say_why(value, reason):
    with pytest.raises(MalformedInput, match=reason):
        list(items(value, LIMITS))
