"""Historical customer-service transcripts mined into question-and-answer FAQ entries.

A transcript file is JSONL, one session a line:

    {"session_id": "s-1042", "lang": "zh",
     "turns": [{"role": "customer", "text": "…"}, {"role": "agent", "text": "…"}]}

`lang` is optional (detected per pair when absent); `role` is `customer`, `agent` or `system`
(system notices such as "transferred to an agent" are skipped). A file is read as transcripts
when its name ends in `.transcripts.jsonl`, or when its first record has a `turns` field; any
other `.jsonl` is an FAQ file.

What becomes an entry: the customer's turns up to an agent's reply, merged, when they ask
something (a question mark, a question word or a request: `_QUESTION_CUES`, `_QUESTION_WORDS`),
paired with the agent's turns that follow, merged. Greetings, thanks and acknowledgements
("你好", "thanks!", "好的") are dropped before pairing, and a leading greeting is trimmed from a
question and an answer. A reply that opens by asking the customer for details (an order number,
say) answers nothing on its own, so its pair is skipped. Phone numbers, e-mail addresses, identity
and card numbers are masked by pattern (`kefu.masking`); names and street addresses have no
pattern, so review mined pairs before they answer customers.

Each entry gets one of `CATEGORIES` from the keyword lexicon `CATEGORY_KEYWORDS`: a keyword
found in the question counts twice, one in the answer once, and the category with the most wins
(ties go to the one listed first). An entry no keyword matches is `other`. English keywords match
whole words and their -s/-es/-ed/-d/-ing forms; Chinese keywords match anywhere.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb_ingest.formats import InvalidFile, declared_language, read_text
from kefu.masking import mask_personal_data
from kefu.models import Chunk
from kefu.text import Language, detect_language, tokenize

TRANSCRIPT_SUFFIX = ".transcripts.jsonl"
UNCATEGORIZED = "other"
CATEGORIES = (
    "shipping",
    "returns",
    "refunds",
    "payment",
    "orders",
    "account",
    "products",
    "promotions",
    "invoices",
    "after_sales",
)
CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "shipping": (
        "ship", "shipped", "shipping", "deliver", "delivery", "courier", "parcel", "package",
        "tracking", "logistics", "dispatch", "arrive",
        "发货", "快递", "物流", "配送", "包裹", "送达", "到货", "运单", "派送", "签收",
    ),
    "returns": (
        "return", "exchange", "send back", "send it back", "no-reason",
        "退货", "换货", "退换", "无理由", "寄回",
    ),
    "refunds": (
        "refund", "money back", "reimburse",
        "退款", "退钱", "退回的钱", "原路返回",
    ),
    "payment": (
        "pay", "paid", "payment", "credit card", "debit card", "alipay", "wechat pay",
        "installment", "charge",
        "支付", "付款", "付钱", "支付宝", "微信支付", "分期", "扣款", "银行卡",
    ),
    "orders": (
        "cancel my order", "cancel the order", "cancel order", "place an order", "order status",
        "change my order", "modify my order", "checkout",
        "下单", "取消订单", "修改订单", "订单状态", "拍下",
    ),
    "account": (
        "account", "password", "log in", "login", "sign in", "register", "sign up",
        "verification code", "username",
        "账号", "账户", "密码", "登录", "注册", "验证码", "绑定", "注销", "用户名",
    ),
    "products": (
        "in stock", "out of stock", "restock", "size", "colour", "color", "specification",
        "material", "genuine", "model number",
        "库存", "有货", "缺货", "补货", "尺码", "尺寸", "颜色", "规格", "型号", "材质", "正品",
    ),
    "promotions": (
        "coupon", "discount", "promo", "promotion", "voucher", "points", "membership", "on sale",
        "flash sale",
        "优惠", "折扣", "满减", "促销", "活动", "积分", "会员", "红包", "秒杀",
    ),
    "invoices": (
        "invoice", "receipt", "vat", "tax number",
        "发票", "开票", "抬头", "税号", "收据",
    ),
    "after_sales": (
        "warranty", "repair", "broken", "faulty", "defect", "damaged", "not working",
        "after-sales", "complaint",
        "保修", "维修", "坏了", "故障", "质量问题", "售后", "投诉", "损坏", "质保",
    ),
}  # fmt: skip
# Words that make a customer's message a question or a request worth an answer: Chinese ones
# anywhere, English ones at the start of a sentence or clause.
_QUESTION_CUES = (
    "吗", "呢", "怎么", "怎样", "如何", "什么", "为什么", "为何", "哪", "几", "多久", "多少",
    "能否", "能不能", "可不可以", "是否", "有没有", "请问", "想问", "我想", "想要", "帮我",
    "麻烦",
)  # fmt: skip
_QUESTION_WORDS = (
    "how", "what", "when", "where", "why", "which", "who", "can", "could", "do", "does", "did",
    "is", "are", "will", "would", "should", "may", "i want", "i'd like", "i would like",
    "i need", "help me", "wondering",
)  # fmt: skip
_PLEASANTRIES = (
    "你好", "您好", "在吗", "在不在", "亲", "谢谢", "多谢", "感谢", "好的", "好", "嗯", "哦",
    "知道了", "明白了", "没问题", "拜拜", "再见", "请稍等", "很高兴为您服务",
    "good morning", "good afternoon", "good evening", "hello", "hi", "hey", "thank you",
    "thanks", "thx", "okay", "ok", "got it", "bye", "great", "cool", "sure",
)  # fmt: skip
# An agent who opens by asking for details ("请提供订单号") has not answered yet; one who asks
# for them later in a reply ("如未到账请提供截图") has.
_INFO_REQUESTS = (
    "请提供", "麻烦提供", "请告诉我您的", "请发一下", "请您提供",
    "please provide", "could you provide", "can you provide", "could you share",
    "can you share", "may i have your", "please send me your",
)  # fmt: skip
MIN_QUESTION_TOKENS = 2
MIN_ANSWER_TOKENS = 3


def _phrases(words: tuple[str, ...], *, inflected: bool = False) -> re.Pattern[str]:
    """One pattern for a word list: English as whole words, Chinese anywhere."""
    ending = r"(?:s|es|ed|d|ing)?" if inflected else ""
    alternatives = sorted(words, key=len, reverse=True)
    return re.compile(
        "|".join(
            rf"\b{re.escape(word)}{ending}\b" if word.isascii() else re.escape(word)
            for word in alternatives
        ),
        re.IGNORECASE,
    )


_CATEGORY_PATTERNS = {
    category: _phrases(words, inflected=True) for category, words in CATEGORY_KEYWORDS.items()
}
_QUESTION = re.compile(
    rf"[?？]|{_phrases(_QUESTION_CUES).pattern}"
    rf"|(?:^|[.!;,。！；，]\s*)(?:{_phrases(_QUESTION_WORDS).pattern})",
    re.IGNORECASE,
)
_PLEASANTRY = _phrases(_PLEASANTRIES)
# Trimmed from the start of a question or answer. A one-character Chinese pleasantry must stand
# alone there: "亲，" is a greeting, the 亲 of "亲子装" is not.
_LEADING_PLEASANTRIES = re.compile(
    r"^(?:[\W_]*(?:"
    + "|".join(
        rf"\b{re.escape(word)}\b"
        if word.isascii()
        else re.escape(word) + (r"(?=[\W_]|$)" if len(word) == 1 else "")
        for word in sorted(_PLEASANTRIES, key=len, reverse=True)
    )
    + r"))+[\W_]*",
    re.IGNORECASE,
)
_INFO_REQUEST = _phrases(_INFO_REQUESTS)
_FIRST_SENTENCE = re.compile(r"(?<=[。！？!?\n])|(?<=\.)\s")


@dataclass(frozen=True, slots=True)
class _Turn:
    index: int
    role: str
    text: str


def is_transcript_file(path: Path) -> bool:
    """By name (`*.transcripts.jsonl`), or by a first record that has `turns`."""
    if path.name.lower().endswith(TRANSCRIPT_SUFFIX):
        return True
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
        first = next((line for line in lines if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and "turns" in record


def load_transcripts(
    path: Path, *, tenant: str = "default", source: str | None = None
) -> list[Chunk]:
    """The FAQ entries mined from a transcript file; ids `{source}#{session}-{turn:03d}`."""
    source = source or path.name
    chunks: list[Chunk] = []
    sessions: dict[str, int] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        session_id, lang, turns = _session(line, where=where)
        if session_id in sessions:
            first = sessions[session_id]
            raise InvalidFile(
                f"{where}: duplicate session_id {session_id!r} (first on line {first})"
            )
        sessions[session_id] = number
        for first_turn, raw_question, raw_answer in _pairs(turns):
            language = lang or detect_language(raw_question + raw_answer)
            # A mined answer may be served to another customer: no contact details go with it.
            question = mask_personal_data(raw_question, language=language)
            answer = mask_personal_data(raw_answer, language=language)
            chunks.append(
                Chunk(
                    id=f"{source}#{session_id}-{first_turn:03d}",
                    kind="faq",
                    lang=language,
                    title=question,
                    text=answer,
                    keys=(question,),
                    category=categorize(question, answer),
                    source=source,
                    tenant=tenant,
                )
            )
    return chunks


def _pairs(turns: list[_Turn]) -> list[tuple[int, str, str]]:
    """`(index of the question's first turn, question, answer)` for each answered question."""
    spoken = [turn for turn in turns if turn.role != "system" and not _is_pleasantry(turn.text)]
    blocks: list[list[_Turn]] = []
    for turn in spoken:
        if blocks and blocks[-1][0].role == turn.role:
            blocks[-1].append(turn)
        else:
            blocks.append([turn])
    pairs: list[tuple[int, str, str]] = []
    for asked, replied in itertools.pairwise(blocks):
        if asked[0].role != "customer":
            continue
        question = _LEADING_PLEASANTRIES.sub("", " ".join(turn.text for turn in asked)).strip()
        answer = _LEADING_PLEASANTRIES.sub("", "\n".join(turn.text for turn in replied)).strip()
        if (
            _is_question(question)
            and len(tokenize(answer)) >= MIN_ANSWER_TOKENS
            and not _INFO_REQUEST.search(_FIRST_SENTENCE.split(answer, maxsplit=1)[0])
        ):
            pairs.append((asked[0].index, question, answer))
    return pairs


def _is_question(text: str) -> bool:
    """A question mark, a question word or a request, and more than a word or two."""
    return len(tokenize(text)) >= MIN_QUESTION_TOKENS and _QUESTION.search(text) is not None


def categorize(question: str, answer: str) -> str:
    """The category whose keywords the pair mentions most; the question weighs double."""
    scores = {
        category: 2 * len(pattern.findall(question)) + len(pattern.findall(answer))
        for category, pattern in _CATEGORY_PATTERNS.items()
    }
    best = max(CATEGORIES, key=lambda category: scores[category])
    return best if scores[best] else UNCATEGORIZED


def _is_pleasantry(text: str) -> bool:
    """Nothing is left once greetings, thanks and acknowledgements are removed.

    Other short turns ("运费？", an order number) stay: they are not questions to mine, but they
    keep the agent's replies before and after them apart.
    """
    return not tokenize(_PLEASANTRY.sub(" ", text))


def _session(line: str, *, where: str) -> tuple[str, Language | None, list[_Turn]]:
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidFile(f"{where}: not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise InvalidFile(f"{where}: a session is a JSON object")
    session_id = str(record.get("session_id") or "").strip()
    if not session_id:
        raise InvalidFile(f"{where}: a session needs a session_id")
    try:
        lang = declared_language(record.get("lang"))
    except ValueError as exc:
        raise InvalidFile(f"{where}: {exc}") from exc
    raw_turns = record.get("turns")
    if not isinstance(raw_turns, list):
        raise InvalidFile(f"{where}: a session needs a list of turns")
    turns: list[_Turn] = []
    for index, turn in enumerate(raw_turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
            raise InvalidFile(f"{where}: turn {index} needs a role and a text")
        role = str(turn.get("role", "")).strip().lower()
        if role not in ("customer", "agent", "system"):
            raise InvalidFile(f"{where}: turn {index} has role {role!r}, not customer or agent")
        turns.append(_Turn(index, role, turn["text"].strip()))
    return session_id, lang, turns
