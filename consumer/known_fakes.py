"""The known-fakes side of the service, built from the settings: bank, topic reader, decisions.

Every replica holds the bank in memory (the detector matches uploads against
it), reads the bank topic into it from the beginning and tails it
(`BankReader`), and takes its share of moderators' rulings from the
decisions topic (`DecisionsLoop`), turning them into bank entries. `/readyz`
waits for the bank to catch up (`ready_checks`): a replica that screened
before it knew the bank would let known fakes through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.bank_topic import BankLog, BankReader, BankWriter, KafkaBankLog, KafkaBankWriter
from consumer.broker import EventSink, KafkaUploadSource, UploadSource
from consumer.cache import VerdictCache
from consumer.decisions import (
    DecisionHandler,
    DecisionOutcome,
    DecisionsLoop,
    HashContent,
    decisions_source_settings,
)
from consumer.media import MediaFetcher
from consumer.settings import Settings
from detector.bank import Bank
from detector.hashing import hashing_fingerprint


@dataclass
class KnownFakesRuntime:
    """The bank, the reader that fills it, the writer and the decisions loop that feed the topic."""

    bank: Bank
    reader: BankReader
    writer: BankWriter
    decisions: DecisionsLoop
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> KnownFakesRuntime:
        self.reader.start()
        self.decisions.start()
        return self

    def ready_checks(self) -> dict[str, bool]:
        """For `/readyz`: the bank has read what its topic held at start; its reader lives."""
        return {"bank_caught_up": self.reader.caught_up, "bank_reader_alive": self.reader.alive}

    def wait_bank(self, timeout_s: float) -> bool:
        """Up to `timeout_s` for the bank to catch up; True once it has, or once its reader
        died (nothing more will come: screening goes on, `/readyz` says why)."""
        return self.reader.wait_caught_up(timeout_s) or not self.reader.alive

    def live_checks(self, stale_after_s: float) -> dict[str, bool]:
        """For `/healthz`: the decisions loop has not died."""
        return {"decisions_polling": self.decisions.alive(stale_after_s)}

    def close(self) -> None:
        """Stop taking rulings, then stop reading the bank; each within about two seconds."""
        self.stopping.set()
        self.decisions.close()
        self.reader.close()
        self.writer.close()


def build_known_fakes(
    settings: Settings,
    *,
    bank: Bank,
    cache: VerdictCache,
    fetcher: MediaFetcher,
    hash_content: HashContent,
    sink: EventSink,
    bank_log: BankLog | None = None,
    writer: BankWriter | None = None,
    decisions_source: UploadSource | None = None,
    on_outcome: Callable[[DecisionOutcome], None] | None = None,
) -> KnownFakesRuntime:
    """The runtime over the real Kafka adapters, unless twins are given (tests).

    `bank` is the one the detector matches against; `hash_content` is
    `Detector.hash_whole` (the isolated decoders); `sink` publishes dead letters.
    """
    stopping = threading.Event()
    writer = writer or KafkaBankWriter(settings.kafka)
    handler = DecisionHandler(
        settings,
        bank=bank,
        writer=writer,
        cache=cache,
        hashing=hashing_fingerprint(settings.detector_config().known_fakes.hashing),
        fetcher=fetcher,
        hash_content=hash_content,
        sink=sink,
        wait=stopping.wait,
    )
    source = decisions_source or KafkaUploadSource(decisions_source_settings(settings).kafka)
    return KnownFakesRuntime(
        bank=bank,
        reader=BankReader(bank_log or KafkaBankLog(settings.kafka), bank),
        writer=writer,
        decisions=DecisionsLoop(handler, source, stopping=stopping, on_outcome=on_outcome),
        stopping=stopping,
    )
