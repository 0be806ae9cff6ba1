"""The answer cache in the chat turn: what is kept, what is never kept, and a cache that fails."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from kefu.adapters.cache import MemoryAnswerCache
from kefu.adapters.extractive import ExtractiveModel
from kefu.adapters.sessions import SqliteSessionStore
from kefu.answer_cache import cache_key, normalise
from kefu.chat import ChatService
from kefu.errors import DependencyUnavailable
from kefu.models import ChatRequest
from kefu.ports import AnswerContext, ModelAnswer


class CountingModel(ExtractiveModel):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def answer(self, context: AnswerContext) -> ModelAnswer:
        self.calls += 1
        return super().answer(context)


@dataclass
class BrokenCache:
    """A cache that is down (or too slow: the adapter maps a timeout the same way)."""

    gets: int = 0
    puts: int = 0

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        raise DependencyUnavailable("cache down")

    def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self.puts += 1
        raise DependencyUnavailable("cache down")


@dataclass
class Spy:
    decisions: list[str] = field(default_factory=list)


@pytest.fixture
def spy(retriever: Any, monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy()
    decide = retriever.decide

    def counted(question: str, **kwargs: Any) -> Any:
        spy.decisions.append(question)
        return decide(question, **kwargs)

    monkeypatch.setattr(retriever, "decide", counted)
    return spy


def service(retriever: Any, cache: Any, model: Any = None, **kwargs: Any) -> ChatService:
    return ChatService(
        retriever=retriever,
        model=model or ExtractiveModel(),
        sessions=SqliteSessionStore(":memory:"),
        cache=cache,
        **kwargs,
    )


def ask(chat: ChatService, message: str, session_id: str | None = None) -> Any:
    return chat.handle(ChatRequest(message=message, session_id=session_id))


def test_a_question_is_normalised_before_it_is_keyed() -> None:
    assert normalise("  How long does a REFUND take？？ ") == "how long does a refund take"
    assert normalise("退款多久到账？") == normalise("退款多久到账")
    key = cache_key(tenant="t", language="en", kb_version="3", question="Refund time?")
    assert key == cache_key(tenant="t", language="en", kb_version="3", question="refund  TIME")
    assert key != cache_key(tenant="t", language="en", kb_version="4", question="Refund time?")
    assert key != cache_key(tenant="u", language="en", kb_version="3", question="Refund time?")
    assert key != cache_key(tenant="t", language="zh", kb_version="3", question="Refund time?")


def test_the_second_customer_asking_is_answered_from_the_cache(retriever: Any, spy: Spy) -> None:
    cache = MemoryAnswerCache()
    chat = service(retriever, cache)
    first = ask(chat, "How long does a refund take?")
    second = ask(chat, "how long does a refund take")  # another customer, another session

    assert spy.decisions == ["How long does a refund take?"]  # retrieved once
    assert second.session_id != first.session_id
    assert second.turn_id != first.turn_id
    assert (second.outcome, second.sources, second.intent) == (
        first.outcome,
        first.sources,
        first.intent,
    )
    assert "AI" in second.answer  # each session's first answer still says it is an AI
    assert len(cache) == 1


def test_a_model_answer_is_kept_and_the_model_asked_once(retriever: Any) -> None:
    model = CountingModel()
    chat = service(retriever, MemoryAnswerCache(), model=model)
    # A passage, not an FAQ entry, answers this: the model writes it.
    first = ask(chat, "Which damage is not covered by the warranty?")
    again = ask(chat, "Which damage is not covered by the warranty?")
    assert first.outcome == "answered"
    assert model.calls == 1
    assert again.answer.split("\n\n")[-1] == first.answer.split("\n\n")[-1]


@pytest.mark.parametrize(
    "message",
    [
        "How long does a refund take? my phone is 13812345678",  # personal data
        "我的订单号是 20231105-8812，退款多久到账？",  # order data
    ],
)
def test_a_question_with_personal_or_order_data_is_never_kept(retriever: Any, message: str) -> None:
    cache = MemoryAnswerCache()
    ask(service(retriever, cache), message)
    assert len(cache) == 0


def test_a_follow_up_is_neither_kept_nor_answered_from_the_cache(retriever: Any, spy: Spy) -> None:
    cache = MemoryAnswerCache()
    chat = service(retriever, cache)
    first = ask(chat, "How long does a refund take?")
    follow_up = ask(chat, "and what if it still has not arrived?", first.session_id)
    assert follow_up.outcome == "answered"  # an answer, but one read within the conversation
    ask(chat, "and what if it still has not arrived?", first.session_id)
    assert len(cache) == 1  # the first question only
    assert spy.decisions.count("and what if it still has not arrived?") == 2


def test_a_declined_question_is_not_kept(retriever: Any) -> None:
    cache = MemoryAnswerCache()
    reply = ask(service(retriever, cache), "Can you recommend a good recipe for lasagna?")
    assert reply.outcome == "declined"
    assert len(cache) == 0


def test_a_new_kb_version_makes_the_old_answers_unreachable(
    retriever: Any, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = service(retriever, MemoryAnswerCache())
    ask(chat, "How long does a refund take?")
    monkeypatch.setattr(retriever, "kb_version", lambda tenant: "a-new-version")
    ask(chat, "How long does a refund take?")
    assert len(spy.decisions) == 2


def test_without_a_kb_version_nothing_is_cached(
    retriever: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = MemoryAnswerCache()
    monkeypatch.setattr(retriever, "kb_version", lambda tenant: None)
    ask(service(retriever, cache), "How long does a refund take?")
    assert len(cache) == 0


def test_a_cache_that_fails_never_fails_the_turn(retriever: Any) -> None:
    cache = BrokenCache()
    chat = service(retriever, cache)
    reply = ask(chat, "How long does a refund take?")
    assert reply.outcome == "answered"
    assert reply.sources[0].id == "refund-01-en"
    assert (cache.gets, cache.puts) == (1, 1)


def test_an_unreadable_entry_is_a_miss(retriever: Any, spy: Spy) -> None:
    cache = MemoryAnswerCache()
    chat = service(retriever, cache)
    version = retriever.kb_version("default")
    key = cache_key(
        tenant="default", language="en", kb_version=version, question="How long does a refund take?"
    )
    cache.put(key, b"{not json", 60)
    reply = ask(chat, "How long does a refund take?")
    assert reply.sources[0].id == "refund-01-en"
    assert len(spy.decisions) == 1


def test_the_lru_drops_the_least_recently_used_and_the_expired() -> None:
    now = [0.0]
    cache = MemoryAnswerCache(2, clock=lambda: now[0])
    cache.put("a", b"1", 10)
    cache.put("b", b"2", 10)
    assert cache.get("a") == b"1"  # a is now the most recent
    cache.put("c", b"3", 10)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (b"1", b"3")
    now[0] = 10.0
    assert cache.get("a") is None
    with pytest.raises(ValueError, match="at least 1"):
        MemoryAnswerCache(0)


def test_a_question_asked_at_once_in_many_conversations_is_answered_once(
    retriever: Any,
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()

    class SlowModel(CountingModel):
        def answer(self, context: AnswerContext) -> ModelAnswer:
            release.wait(5)  # the others arrive while the first is being answered
            return super().answer(context)

    model = SlowModel()
    chat = service(retriever, MemoryAnswerCache(), model=model)
    question = "Which damage is not covered by the warranty?"
    with ThreadPoolExecutor(8) as pool:
        asked = [pool.submit(ask, chat, question) for _ in range(8)]
        time.sleep(0.3)  # all eight have asked; without the wait, each would be in the model
        release.set()
        replies = [future.result() for future in asked]
    assert model.calls == 1
    assert len({reply.session_id for reply in replies}) == 8
    assert {reply.outcome for reply in replies} == {"answered"}


def test_the_cache_user_and_password_are_read_from_secrets_manager() -> None:
    import json

    import boto3
    from moto import mock_aws

    from kefu.adapters.cache import secret_credentials

    with mock_aws():
        client = boto3.client("secretsmanager")
        client.create_secret(
            Name="kefu/cache", SecretString=json.dumps({"username": "kefu-chat", "password": "pw"})
        )
        client.create_secret(Name="kefu/half", SecretString=json.dumps({"username": "kefu-chat"}))
        client.create_secret(Name="kefu/text", SecretString="not json")
        assert secret_credentials("kefu/cache", max_age=0)() == ("kefu-chat", "pw")
        with pytest.raises(DependencyUnavailable, match="unreadable"):
            secret_credentials("kefu/missing", max_age=0)()
        with pytest.raises(DependencyUnavailable, match="username"):
            secret_credentials("kefu/half", max_age=0)()
        # Not JSON: Powertools' transform error, mapped like any other failure.
        with pytest.raises(DependencyUnavailable, match="unreadable"):
            secret_credentials("kefu/text", max_age=0)()


def test_reading_the_cache_credentials_is_bounded() -> None:
    """The secret is read inside a connection attempt, within the chat turn: short timeouts."""
    import boto3
    from moto import mock_aws

    from kefu.adapters.cache import secret_credentials

    with mock_aws():
        seen: list[Any] = []
        real = boto3.client("secretsmanager")
        real.create_secret(Name="kefu/cache", SecretString='{"username": "u", "password": "p"}')

        def spy(*args: Any, **kwargs: Any) -> Any:
            client = real_client(*args, **kwargs)
            seen.append(client.meta.config)
            return client

        real_client = boto3.session.Session.client
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(boto3.session.Session, "client", spy)
            assert secret_credentials("kefu/cache", max_age=0)() == ("u", "p")
        [config] = seen
        assert config.connect_timeout <= 1
        assert config.read_timeout <= 1
        assert config.retries["total_max_attempts"] <= 2


def test_the_composition_root_builds_the_configured_cache() -> None:
    from kefu.adapters.cache import RedisAnswerCache
    from kefu.bootstrap import build_answer_cache
    from kefu.errors import ConfigurationError
    from kefu.settings import Settings

    assert isinstance(build_answer_cache(Settings()), MemoryAnswerCache)
    assert build_answer_cache(Settings(answer_cache="none")) is None
    deployed = build_answer_cache(
        Settings(redis_url="rediss://cache.example:6379", redis_secret="kefu/dev/cache")
    )
    assert isinstance(deployed, RedisAnswerCache)
    kwargs = deployed._client.connection_pool.connection_kwargs
    assert kwargs["credential_provider"] is not None
    assert kwargs["host"] == "cache.example"
    with pytest.raises(ConfigurationError, match="KEFU_REDIS_URL"):
        build_answer_cache(Settings(answer_cache="redis"))
