from hypothesis import given
from hypothesis import strategies as st

from kefu.text import detect_language, tokenize


def test_chinese_english_and_mixed_messages_get_the_expected_language() -> None:
    assert detect_language("我的快递到哪里了") == "zh"
    assert detect_language("Where is my parcel?") == "en"
    assert detect_language("我的order什么时候发货") == "zh"
    assert detect_language("Can I return the 保温杯 I bought?") == "en"


def test_chinese_is_tokenized_into_overlapping_bigrams_and_english_into_words() -> None:
    assert tokenize("退款多久") == ["退款", "款多", "多久"]
    assert tokenize("How do I track my Order?") == ["track", "order"]
    assert tokenize("iPhone 15 保修") == ["iphone", "15", "保修"]


@given(st.text(max_size=200))
def test_tokens_are_never_empty_and_always_lowercase(text: str) -> None:
    for token in tokenize(text):
        assert token
        assert token == token.lower()
