"""The Kafka producer adapter: what it reports as retriable, and when it replaces its producer.

kafka-python's producer is replaced by a fake here, except where closing it during an
outage is specified (a real broker, stopped); the service's whole outage is exercised in
tests/integration/test_outage.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from consumer import broker
from consumer.broker import KafkaEventSink, PublishError
from consumer.settings import KafkaSettings
from tests.support.broker import TansuBroker


class FakeProducer:
    """Fails its sends with the errors it is given, in order, then succeeds."""

    made: ClassVar[list[FakeProducer]] = []
    errors: ClassVar[list[Exception]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.closed = False
        FakeProducer.made.append(self)

    def send(self, topic: str, **record: Any) -> FakeProducer:
        if FakeProducer.errors:
            raise FakeProducer.errors.pop(0)
        return self

    def get(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        self.closed = True


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> KafkaEventSink:
    FakeProducer.made, FakeProducer.errors = [], []
    monkeypatch.setattr(broker, "KafkaProducer", FakeProducer)
    return KafkaEventSink(KafkaSettings(producer_max_request_bytes=2 * 1024 * 1024))


def test_the_producer_is_sized_by_the_setting(sink: KafkaEventSink) -> None:
    [producer] = FakeProducer.made
    assert producer.options["max_request_size"] == 2 * 1024 * 1024
    assert producer.options["enable_idempotence"] is True


def test_a_producer_that_gave_up_is_replaced_and_the_send_may_be_retried(
    sink: KafkaEventSink,
) -> None:
    FakeProducer.errors = [KafkaError("Aborting producer batches due to fatal error")]
    with pytest.raises(PublishError) as failed:
        sink.send("flags", b"k", b"v", [])
    assert failed.value.retriable
    assert not sink.publishing()
    assert len(FakeProducer.made) == 2 and sink.rebuilds == 1
    sink.send("flags", b"k", b"v", [])  # through the new producer
    assert sink.publishing()


def test_an_outage_is_retriable_without_a_new_producer(sink: KafkaEventSink) -> None:
    FakeProducer.errors = [KafkaTimeoutError("no ack in 30 s")]
    with pytest.raises(PublishError) as failed:
        sink.send("flags", b"k", b"v", [])
    assert failed.value.retriable and len(FakeProducer.made) == 1


def test_a_record_that_can_never_be_sent_is_not_retriable_and_keeps_the_producer(
    sink: KafkaEventSink,
) -> None:
    FakeProducer.errors = [MessageSizeTooLargeError("2 MiB > 1 MiB")]
    with pytest.raises(PublishError) as failed:
        sink.send("dlq", b"k", b"v" * 10, [])
    assert not failed.value.retriable and failed.value.error_class == "MessageSizeTooLargeError"
    assert len(FakeProducer.made) == 1 and sink.publishing()


class RecordedClient:
    """Stands in for kafka-python's producer and consumer: records the options it is made with."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *topics: str, **options: Any) -> None:
        RecordedClient.made.append(options)
        self._fetcher = self  # the uploads source swaps its fetcher's record class


def test_every_kafka_client_is_made_without_client_metrics_and_with_the_security_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from consumer import bank_topic
    from consumer.bank_topic import KafkaBankLog, KafkaBankWriter

    RecordedClient.made = []
    for module in (broker, bank_topic):
        monkeypatch.setattr(module, "KafkaProducer", RecordedClient)
        monkeypatch.setattr(module, "KafkaConsumer", RecordedClient)
    monkeypatch.setattr(broker, "keep_finished_joins", lambda consumer: None)
    settings = KafkaSettings(security_protocol="SSL")
    KafkaEventSink(settings)
    broker.KafkaUploadSource(settings)
    KafkaBankWriter(settings)
    KafkaBankLog(settings)
    assert len(RecordedClient.made) == 4
    for options in RecordedClient.made:
        assert options["metrics_enabled"] is False
        assert options["security_protocol"] == "SSL"


def test_closing_the_sink_during_an_outage_fails_what_it_held_and_leaves_no_thread() -> None:
    with TansuBroker() as running:
        running.create_topic("flags")
        sink = KafkaEventSink(KafkaSettings(bootstrap_servers=running.bootstrap))
        sink.send("flags", None, b"before the outage", [])
    failures: list[PublishError] = []
    sink.send_async("flags", None, b"during the outage", [], lambda: None, failures.append)

    started = time.monotonic()
    sink.close()
    closing_s = time.monotonic() - started

    assert closing_s < 2 * broker.PRODUCER_CLOSE_TIMEOUT_S + 0.5
    assert [failure.retriable for failure in failures] == [True]
    senders = [t for t in threading.enumerate() if t.name.endswith("-producer-network-thread")]
    assert not [t for t in senders if t.is_alive()]
