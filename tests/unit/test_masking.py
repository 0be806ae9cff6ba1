"""Personal data masked by pattern, in both languages; ordinary numbers left alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kefu.masking import mask_personal_data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我叫王伟，电话13812345678", "我叫王伟，电话[电话]"),
        ("call +86 138-1234-5678 please", "call [phone] please"),
        ("座机 010-12345678", "座机 [电话]"),
        ("mail me at wang.wei@example.com.", "mail me at [email]."),
        ("身份证 11010519491231002X 已核验", "身份证 [身份证号] 已核验"),
        ("card 6222 0212 3456 7890 123", "card [card number]"),
    ],
)
def test_contact_details_and_identity_numbers_are_masked(text: str, expected: str) -> None:
    language = "en" if text.isascii() else "zh"
    assert mask_personal_data(text, language=language) == expected


@pytest.mark.parametrize(
    "text", ["订单 20241101 已发货", "Refunds take 1-3 business days", "¥199 退了 180"]
)
def test_prices_dates_and_short_numbers_are_left_alone(text: str) -> None:
    assert mask_personal_data(text) == text


@given(st.from_regex(r"1[3-9]\d{9}", fullmatch=True), st.text(alphabet="订单发货的了 ", max_size=8))
def test_a_mobile_number_never_survives(number: str, context: str) -> None:
    assert number not in mask_personal_data(f"{context}{number}{context}")
