"""Every knowledge-base format: FAQ tables, HTML, text, PDF and transcripts, built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from kb_ingest.chunking import MAX_PASSAGE_TOKENS
from kb_ingest.loaders import LOADERS, InvalidFile, UnsupportedFile, load
from kb_ingest.pipeline import ingest
from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.adapters.embedders import HashingEmbedder
from kefu.text import tokenize

ZH_HEADER = "编号,标准问题,相似问题,答案,分类,备注"


def _csv(path: Path, *rows: str) -> Path:
    """A CSV as Excel's 'CSV UTF-8' writes it: with a byte-order mark."""
    path.write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    return path


def _xlsx(path: Path, rows: list[list[Any]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def _transcripts(path: Path, *sessions: dict[str, Any]) -> Path:
    path.write_text(
        "\n".join(json.dumps(s, ensure_ascii=False) for s in sessions) + "\n", encoding="utf-8"
    )
    return path


def _turns(*texts: str) -> list[dict[str, str]]:
    """Alternating customer and agent turns, the customer first."""
    return [
        {"role": "customer" if n % 2 == 0 else "agent", "text": text}
        for n, text in enumerate(texts)
    ]


def _pdf(pages: list[list[str]], *, title: str | None = None) -> bytes:
    """A minimal PDF written by hand, one list of text lines a page.

    No PDF writer is a dependency, and pypdf can only copy pages, not lay out text. ASCII lines
    use the built-in Helvetica; other lines a Type0 font whose ToUnicode map gives each code its
    own code point, which is all text extraction reads (the glyphs themselves would not render).
    """
    wide = sorted({ch for page in pages for line in page for ch in line if not ch.isascii()})
    cmap = (
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /U def "
        "1 begincodespacerange <0000> <FFFF> endcodespacerange "
        f"{len(wide)} beginbfchar {' '.join(f'<{ord(c):04X}> <{ord(c):04X}>' for c in wide)} "
        "endbfchar endcmap CMapName currentdict /CMap defineresource pop end end"
    ).encode()
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes) -> bytes:
        return b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data)

    helvetica = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    to_unicode = add(stream(cmap))
    descendant = add(
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /Song /CIDSystemInfo << /Registry "
        b"(Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor << /Type /FontDescriptor "
        b"/FontName /Song /Flags 4 /FontBBox [0 0 1000 1000] /ItalicAngle 0 /Ascent 880 "
        b"/Descent -120 /CapHeight 700 /StemV 80 >> /DW 1000 >>"
    )
    unicode_font = add(
        b"<< /Type /Font /Subtype /Type0 /BaseFont /Song /Encoding /Identity-H "
        b"/DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (descendant, to_unicode)
    )
    pages_object = len(objects) + 2 * len(pages) + 1
    kids = []
    for page in pages:
        operators = ["BT", "72 760 Td", "14 TL"]
        for line in page:
            if line.isascii():
                escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                operators.append(f"/F1 11 Tf ({escaped}) '")
            else:
                operators.append(f"/F2 11 Tf <{''.join(f'{ord(c):04X}' for c in line)}> '")
        operators.append("ET")
        content = add(stream("\n".join(operators).encode()))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> >>"
                % (pages_object, content, helvetica, unicode_font)
            )
        )
    references = b" ".join(b"%d 0 R" % kid for kid in kids)
    add(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (references, len(kids)))
    catalog = add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_object)
    info = b" /Info %d 0 R" % add(b"<< /Title (%s) >>" % title.encode()) if title else b""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        info,
        xref,
    )
    return bytes(out)


# FAQ tables ------------------------------------------------------------------------------------


def test_a_chinese_csv_with_a_bom_gives_entries_with_stable_derived_ids(tmp_path: Path) -> None:
    # Given a CSV saved by Excel: a BOM, Chinese headers, a notes column, similar questions
    # separated by |, ； and line breaks, and one row with its own id
    path = _csv(
        tmp_path / "faq.csv",
        ZH_HEADER,
        ',多久发货？,"几天发货|什么时候发货；发货要多久\n多久发货？",48 小时内发货。,shipping,备注',
        "inv-1,发票怎么开？,,在订单详情页申请电子发票。,invoices,",
    )

    # When it is loaded twice
    first, again = load(path), load(path)

    # Then each row is one FAQ entry, the standard question first, each wording once
    shipping, invoices = first
    assert shipping.keys == ("多久发货？", "几天发货", "什么时候发货", "发货要多久")
    assert (shipping.kind, shipping.title, shipping.text) == (
        "faq",
        "多久发货？",
        "48 小时内发货。",
    )
    assert (shipping.lang, shipping.category, shipping.source) == ("zh", "shipping", "faq.csv")
    assert invoices.id == "faq.csv#inv-1"  # a sheet's ids are scoped to it
    assert invoices.keys == ("发票怎么开？",)
    # And a missing id is derived from the source and the question, the same every time
    assert shipping.id.startswith("faq.csv#faq-")
    assert [c.id for c in again] == [c.id for c in first]


def test_derived_ids_survive_a_row_inserted_above_and_follow_the_source_name(
    tmp_path: Path,
) -> None:
    header = "question,similar_questions,answer,category"
    row = "How long is the warranty?,warranty length,One year.,after_sales"
    before = load(_csv(tmp_path / "faq.csv", header, row))
    after = load(_csv(tmp_path / "faq.csv", header, "Do you ship abroad?,,No.,shipping", row))
    assert after[1].id == before[0].id
    assert load(tmp_path / "faq.csv", source="kb/en/faq.csv")[1].id != before[0].id


def test_english_headers_are_matched_without_regard_to_case_or_spacing(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "faq.csv",
        "Standard Question,Similar-Questions,ANSWER,Language",
        "Can I pay in instalments?,installments|pay monthly,Yes with credit cards.,en-US",
    )
    [entry] = load(path)
    assert entry.keys == ("Can I pay in instalments?", "installments", "pay monthly")
    assert (entry.lang, entry.category) == ("en", "")


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        (
            ["问题,答案,分类", "怎么退货？,,returns"],
            r"faq\.csv row 2: an FAQ entry needs a question",
        ),
        (
            ["question,answer", "Refund time?,Usually 3 days, sometimes 5."],
            r"row 2: a value in column 3, which has no header \(quote a cell",
        ),
        (["question,reply", "a?,b"], r"row 1: the header .* lacks .*answer: answer, 答案"),
        (["问题,答案", "运费多少？,10 元", "运费多少？,免运费"], r"row 3: duplicate id .*row 2"),
        (["question,answer,lang", "Hi?,Hello.,fr"], r"row 2: language 'fr' is neither zh nor en"),
        (["问题,问题,答案", "a,b,c"], r"row 1: two columns hold the question"),
    ],
)
def test_a_malformed_csv_names_the_row(tmp_path: Path, rows: list[str], reason: str) -> None:
    with pytest.raises(InvalidFile, match=reason):
        load(_csv(tmp_path / "faq.csv", *rows))


def test_a_csv_that_is_not_utf8_says_how_to_save_it(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_bytes("问题,答案\n怎么退货？,申请售后。\n".encode("gbk"))
    with pytest.raises(InvalidFile, match=r"not UTF-8 text .*CSV UTF-8"):
        load(path)


def test_an_xlsx_workbook_gives_the_same_entries_as_a_csv(tmp_path: Path) -> None:
    # Given a workbook with a blank first row, a numeric id and an empty similar-questions cell
    path = _xlsx(
        tmp_path / "faq.xlsx",
        [
            [],
            ["ID", "Question", "Similar Questions", "Answer", "Category", "Lang"],
            [101, "Change the address?", "edit address|wrong address", "Yes.", "orders", "en"],
            [None, "可以开专票吗？", None, "可以，在订单页申请。", "invoices", None],
        ],
    )  # fmt: skip
    first, second = load(path)
    assert first.id == "faq.xlsx#101"
    assert first.keys == ("Change the address?", "edit address", "wrong address")
    assert (first.lang, first.category) == ("en", "orders")
    assert (second.lang, second.keys, second.source) == ("zh", ("可以开专票吗？",), "faq.xlsx")
    assert [c.id for c in load(path)] == [first.id, second.id]


def test_a_malformed_xlsx_row_is_named_by_its_sheet_row(tmp_path: Path) -> None:
    path = _xlsx(
        tmp_path / "faq.xlsx", [[], ["问题", "答案"], ["怎么退货？", "申请售后。"], ["运费？"]]
    )
    with pytest.raises(InvalidFile, match=r"faq\.xlsx row 4: an FAQ entry needs"):
        load(path)


def test_a_file_named_xlsx_that_is_not_a_workbook_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "faq.xlsx"
    path.write_text("question,answer\n", encoding="utf-8")
    with pytest.raises(InvalidFile, match=r"faq\.xlsx: not a readable XLSX workbook"):
        load(path)


# Documents -------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
  <title>退货政策 | 青鸟商城</title>
  <meta name="category" content="returns">
  <style>p { color: red }</style>
  <script>var tracking = "ignore me";</script>
</head>
<body>
  <nav><a href="/">首页</a> | <a href="/help">帮助中心</a></nav>
  <h1>退货政策</h1>
  <p>本政策说明如何退货。
     退款原路返回。</p>
  <h2>无理由退货</h2>
  <ul><li>签收 7 天内</li><li>商品未使用</li></ul>
  <h3>不适用商品</h3>
  <p>内衣、<b>定制</b>商品不支持无理由退货。</p>
  <script>alert("not content")</script>
  <h2>退款时效</h2>
  <table><tr><th>方式</th><th>时效</th></tr><tr><td>支付宝</td><td>1–3 天</td></tr></table>
  <footer>© 青鸟商城</footer>
</body>
</html>
"""


def test_html_is_split_at_its_headings_without_scripts_styles_or_navigation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "returns.html"
    path.write_text(PAGE, encoding="utf-8")
    chunks = load(path)
    assert [(c.section, c.text) for c in chunks] == [
        ("", "本政策说明如何退货。退款原路返回。"),
        ("无理由退货", "签收 7 天内\n商品未使用"),
        ("无理由退货 > 不适用商品", "内衣、定制商品不支持无理由退货。"),
        ("退款时效", "方式 时效\n支付宝 1–3 天"),
    ]
    # The first <h1> titles the page; <html lang> and <meta name="category"> are its metadata
    assert {(c.title, c.lang, c.category, c.kind) for c in chunks} == {
        ("退货政策", "zh", "returns", "passage")
    }
    assert [c.id for c in chunks] == [f"returns.html#{n:03d}" for n in range(1, 5)]
    assert all("首页" not in c.text and "alert" not in c.text for c in chunks)


def test_an_html_page_without_h1_is_titled_by_its_title_element(tmp_path: Path) -> None:
    path = tmp_path / "ship.htm"
    path.write_text(
        "<title>Shipping</title><h2>Times</h2><p>Orders ship in 48 hours.</p>", encoding="utf-8"
    )
    [chunk] = load(path)
    assert (chunk.title, chunk.section, chunk.lang, chunk.category) == (
        "Shipping",
        "Times",
        "en",
        "",
    )


def test_markdown_front_matter_sets_category_and_language(tmp_path: Path) -> None:
    path = tmp_path / "care.md"
    path.write_text(
        "---\ncategory: after_sales\nlang: zh\n---\n# Care guide\n\n## Washing\n\nHand wash.\n",
        encoding="utf-8",
    )
    [chunk] = load(path)
    assert (chunk.title, chunk.section, chunk.text) == ("Care guide", "Washing", "Hand wash.")
    assert (chunk.category, chunk.lang) == ("after_sales", "zh")


def test_a_leading_rule_that_is_not_front_matter_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("---\nJust a rule, then text.\n---\nMore.\n", encoding="utf-8")
    [chunk] = load(path)
    assert "Just a rule" in chunk.text
    assert chunk.category == ""


def test_plain_text_takes_its_title_from_a_standalone_first_line(tmp_path: Path) -> None:
    path = tmp_path / "shipping-notes.txt"
    path.write_text(
        "Shipping notes\n\nWe ship every day.\n\nWeekend orders leave on Monday.\n",
        encoding="utf-8",
    )
    [chunk] = load(path)
    assert chunk.title == "Shipping notes"
    assert chunk.text == "We ship every day.\n\nWeekend orders leave on Monday."
    assert (chunk.section, chunk.lang, chunk.id) == ("", "en", "shipping-notes.txt#001")


def test_plain_text_starting_with_a_sentence_is_titled_by_its_file_name(tmp_path: Path) -> None:
    path = tmp_path / "保修说明.zh.txt"
    path.write_text("电子产品保修一年。\n\n大家电保修两年。\n", encoding="utf-8")
    [chunk] = load(path)
    assert (chunk.title, chunk.lang) == ("保修说明.zh", "zh")
    assert chunk.text.startswith("电子产品保修一年。")


def test_long_chinese_text_is_chunked_within_the_token_budget(tmp_path: Path) -> None:
    path = tmp_path / "policy.txt"
    path.write_text("七天无理由退货须保持商品完好且配件齐全。" * 60, encoding="utf-8")
    chunks = load(path)
    assert len(chunks) > 1
    assert all(len(tokenize(c.text)) <= MAX_PASSAGE_TOKENS for c in chunks)
    assert [c.id for c in chunks] == [f"policy.txt#{n:03d}" for n in range(1, len(chunks) + 1)]


def test_a_pdf_is_read_page_by_page_with_the_page_as_section(tmp_path: Path) -> None:
    # Given a two-page PDF: English lines on one page, wrapped Chinese lines on the other
    path = tmp_path / "warranty.pdf"
    path.write_bytes(
        _pdf(
            [
                ["Electronics carry a one-year", "manufacturer warranty."],
                ["保修期自签收之日起计算，", "非人为损坏可免费维修。"],
            ],
            title="Warranty Policy",
        )
    )
    chunks = load(path)
    # Then each page is a passage naming its page, its wrapped lines joined back
    assert [(c.section, c.text) for c in chunks] == [
        ("p. 1", "Electronics carry a one-year manufacturer warranty."),
        ("p. 2", "保修期自签收之日起计算，非人为损坏可免费维修。"),
    ]
    assert {(c.title, c.kind, c.source) for c in chunks} == {
        ("Warranty Policy", "passage", "warranty.pdf")
    }
    assert [c.id for c in load(path)] == ["warranty.pdf#001", "warranty.pdf#002"]


def test_a_pdf_without_a_text_layer_or_not_a_pdf_at_all_is_invalid(tmp_path: Path) -> None:
    scanned = tmp_path / "scan.pdf"
    scanned.write_bytes(_pdf([[]]))
    with pytest.raises(InvalidFile, match=r"scan\.pdf: no text layer"):
        load(scanned)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not a PDF body")
    with pytest.raises(InvalidFile, match=r"broken\.pdf: not a readable PDF"):
        load(broken)


def test_a_document_declaring_a_language_the_service_does_not_answer_in_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "page.html"
    path.write_text('<html lang="fr"><p>Bonjour.</p></html>', encoding="utf-8")
    with pytest.raises(InvalidFile, match=r"page\.html: language 'fr' is neither zh nor en"):
        load(path)


# Transcripts -----------------------------------------------------------------------------------

SESSIONS: list[dict[str, Any]] = [
    {
        "session_id": "s-1",
        "turns": [
            {"role": "customer", "text": "你好"},
            {"role": "agent", "text": "您好，很高兴为您服务"},
            {"role": "customer", "text": "我买的耳机坏了"},
            {"role": "customer", "text": "可以保修吗？"},
            {"role": "system", "text": "已转接人工客服"},
            {"role": "agent", "text": "您好！耳机享受一年保修，请在订单页申请售后维修。"},
            {"role": "customer", "text": "好的，谢谢"},
        ],
    },
    {
        "session_id": "s-2",
        "lang": "en",
        "turns": _turns(
            "Hi, when will my parcel arrive?",
            "Could you provide your order number?",
            "12345",
            "It was shipped yesterday; the courier delivers tomorrow.",
            "Can I use two coupons on one order?",
            "Only one coupon can be used per order.",
            "What's the weather like in Shanghai?",
            "I can only help with questions about your shopping here.",
            "ok thanks",
        ),
    },
]


def test_transcripts_are_mined_into_categorised_question_answer_pairs(tmp_path: Path) -> None:
    path = _transcripts(tmp_path / "march.transcripts.jsonl", *SESSIONS)
    chunks = load(path)
    assert [(c.id, c.title, c.text, c.category) for c in chunks] == [
        (
            "march.transcripts.jsonl#s-1-002",
            "我买的耳机坏了 可以保修吗？",  # consecutive customer turns merged
            "耳机享受一年保修，请在订单页申请售后维修。",  # the greeting trimmed
            "after_sales",
        ),
        (
            "march.transcripts.jsonl#s-2-004",
            "Can I use two coupons on one order?",
            "Only one coupon can be used per order.",
            "promotions",
        ),
        (
            "march.transcripts.jsonl#s-2-006",
            "What's the weather like in Shanghai?",
            "I can only help with questions about your shopping here.",
            "other",  # no keyword of any category
        ),
    ]
    # The parcel question got a request for the order number, not an answer: not mined
    assert all("parcel" not in c.title for c in chunks)
    assert all(c.kind == "faq" and c.keys == (c.title,) for c in chunks)
    assert [c.lang for c in chunks] == ["zh", "en", "en"]
    assert [c.id for c in load(path)] == [c.id for c in chunks]


@pytest.mark.parametrize(
    ("question", "answer", "category"),
    [
        ("快递到哪了？", "包裹已到达本地派送站。", "shipping"),
        ("How do I return these shoes?", "Apply in My Orders within 7 days.", "returns"),
        ("退款多久到账？", "退款 1–3 个工作日原路返回。", "refunds"),
        ("Can I pay with Alipay?", "Yes, Alipay and cards are accepted.", "payment"),
        ("How do I cancel my order?", "Tap Cancel in the order page.", "orders"),
        ("忘记密码怎么办？", "在登录页点击忘记密码。", "account"),
        ("这款鞋有 42 码的库存吗？", "目前 42 码有货。", "products"),
        ("优惠券怎么用？", "结算时选择优惠券即可。", "promotions"),
        ("Can I get a VAT invoice?", "Yes, request it from the order page.", "invoices"),
        ("耳机坏了能保修吗？", "一年内免费维修。", "after_sales"),
    ],
)
def test_each_category_is_recognised_in_both_languages(
    tmp_path: Path, question: str, answer: str, category: str
) -> None:
    session = {"session_id": "s", "turns": _turns(question, answer)}
    path = _transcripts(tmp_path / "t.transcripts.jsonl", session)
    [chunk] = load(path)
    assert chunk.category == category


def test_a_reply_that_asks_for_details_only_after_answering_is_kept(tmp_path: Path) -> None:
    session = {
        "session_id": "s",
        "turns": _turns("退款多久到账？", "1–3 个工作日原路返回。如未到账，请提供截图。"),
    }
    [chunk] = load(_transcripts(tmp_path / "t.transcripts.jsonl", session))
    assert (chunk.title, chunk.category) == ("退款多久到账？", "refunds")


def test_a_jsonl_file_with_turns_is_read_as_transcripts_whatever_its_name(tmp_path: Path) -> None:
    path = _transcripts(tmp_path / "export.jsonl", SESSIONS[1])
    assert [c.id for c in load(path)] == ["export.jsonl#s-2-004", "export.jsonl#s-2-006"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"session_id": "a", "turns": []}\n{oops', r"line 2: not JSON"),
        ('{"turns": []}', r"line 1: a session needs a session_id"),
        ('{"session_id": "a", "turns": "hi"}', r"line 1: a session needs a list of turns"),
        ('{"session_id": "a", "turns": [{"role": "bot", "text": "hi"}]}', r"turn 0 has role 'bot'"),
        ('{"session_id": "a", "turns": [{"role": "agent"}]}', r"turn 0 needs a role and a text"),
        ('{"session_id": "a", "turns": []}\n{"session_id": "a", "turns": []}', "line 2: duplicate"),
    ],
)  # fmt: skip
def test_a_malformed_transcript_names_the_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "bad.transcripts.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InvalidFile, match=reason):
        load(path)


# Registry and pipeline -------------------------------------------------------------------------


def test_every_format_is_registered_and_others_are_refused(tmp_path: Path) -> None:
    assert set(LOADERS) == {
        ".jsonl", ".csv", ".xlsx", ".md", ".markdown", ".html", ".htm", ".txt", ".pdf"
    }  # fmt: skip
    with pytest.raises(UnsupportedFile, match=r"unsupported format \.xls"):
        load(tmp_path / "old.xls")


def test_a_folder_of_mixed_formats_is_indexed_and_a_broken_file_reported(tmp_path: Path) -> None:
    _csv(tmp_path / "faq.csv", "问题,答案,分类", "多久发货？,48 小时内。,shipping")
    _xlsx(tmp_path / "faq.xlsx", [["question", "answer"], ["Do you ship abroad?", "No."]])
    (tmp_path / "page.html").write_text(PAGE, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("We ship daily.\n", encoding="utf-8")
    (tmp_path / "guide.pdf").write_bytes(_pdf([["Keep the receipt."]]))
    _transcripts(tmp_path / "chats.transcripts.jsonl", SESSIONS[1])
    _csv(tmp_path / "broken.csv", "问题,答案", "只有问题？,")

    index = EmbeddedIndex(":memory:")
    report = ingest([tmp_path], index=index, embedder=HashingEmbedder(), tenant="acme")

    assert report.files == 6
    assert report.failures == [
        ("broken.csv", "broken.csv row 2: an FAQ entry needs a question and an answer")
    ]
    assert index.count() == report.entries == 1 + 1 + 4 + 1 + 1 + 2
    again = ingest([tmp_path], index=index, embedder=HashingEmbedder(), tenant="acme")
    assert (again.chunks_written, again.chunks_unchanged) == (0, report.entries)


def test_mined_pairs_carry_no_phone_numbers_or_email_addresses(tmp_path: Path) -> None:
    session = {
        "session_id": "s-pii",
        "turns": [
            {"role": "customer", "text": "我的快递什么时候到？我电话13812345678"},
            {"role": "agent", "text": "预计明天送达，快递员电话13900001111，邮箱 kd@example.com"},
        ],
    }
    path = tmp_path / "pii.transcripts.jsonl"
    path.write_text(json.dumps(session, ensure_ascii=False), encoding="utf-8")
    [pair] = load(path)
    assert "1381234" not in pair.title
    assert "[电话]" in pair.title
    assert "13900001111" not in pair.text
    assert "example.com" not in pair.text
