"""Personal data masked by pattern, in both languages; ordinary numbers left alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kefu.masking import mask_personal_data

# A valid identity number (GB 11643 check digit) and a Luhn-valid card number.
ID_NUMBER = "11010519491231002X"
CARD = "6222 0212 3456 7894"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我叫王伟，电话13812345678", "我叫王伟，电话[电话]"),
        ("手机 138 1234 5678，或 138.1234.5678", "手机 [电话]，或 [电话]"),
        ("座机 010-12345678 或 (010)12345678 或 021 1234 5678", "座机 [电话] 或 [电话] 或 [电话]"),
        (f"身份证 {ID_NUMBER} 已核验", "身份证 [身份证号] 已核验"),
        (f"卡号 {CARD}", "卡号 [银行卡号]"),
    ],
)
def test_chinese_contact_details_and_identity_numbers_are_masked(text: str, expected: str) -> None:
    assert mask_personal_data(text, language="zh") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +86 138-1234-5678 please", "call [phone] please"),
        ("mail me at wang.wei@example.com.", "mail me at [email]."),
        ("call (415) 555-0123 or 415-555-0123", "call [phone] or [phone]"),
        ("office +44 20 7946 0958, US +1 415 555 0123", "office [phone], US [phone]"),
        (f"card {CARD.replace(' ', '-')} thanks", "card [card number] thanks"),
    ],
)
def test_english_contact_details_are_masked(text: str, expected: str) -> None:
    assert mask_personal_data(text, language="en") == expected


@pytest.mark.parametrize(
    "text",
    [
        "订单 20241101 已发货",
        "Refunds take 1-3 business days",
        "¥199 退了 180",
        "鞋码有 35 36 37 38 39 40 41",
        "Sizes 36 37 38 39 40 41 42",
        "活动时间 2024-01-15 2024-02-15",
        "价格 199 299 399 499 599 元",
        "订单号 202411011234567890",  # 18 digits, but no valid check digit
        "订单号 6222021234567890",  # 16 digits failing the Luhn check
        "营业时间 9:00-22:00",
    ],
)
def test_prices_dates_sizes_and_order_numbers_are_left_alone(text: str) -> None:
    assert mask_personal_data(text) == text


@given(st.from_regex(r"1[3-9]\d{9}", fullmatch=True), st.text(alphabet="订单发货的了 ", max_size=8))
def test_a_mobile_number_never_survives(number: str, context: str) -> None:
    assert number not in mask_personal_data(f"{context}{number}{context}")
