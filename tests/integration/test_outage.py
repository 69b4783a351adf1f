"""The broker goes away for 20 s and comes back: the service publishes again, by itself.

Each test runs its own broker behind a TCP proxy (the broker advertises the
proxy's port), so the link can be cut without stopping the broker, and the
broker can be restarted on the same port. While the service cannot reach the
broker it is not ready; once the broker is back, uploads get their outcomes
again without a restart of the service.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Topics, service_settings
from tests.integration.outcomes import file_upload, publish, wait_for
from tests.support.broker import produce
from tests.support.proxy import ProxiedBroker

pytestmark = pytest.mark.timeout(420)

OUTAGE_S = 20.0


@pytest.fixture
def site() -> Iterator[ProxiedBroker]:
    made = ProxiedBroker()
    yield made
    made.close()


def readiness(service: Any) -> int:
    port = service.app.health.port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def wait_until_not_ready(service: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if readiness(service) == 503:
            return True
        time.sleep(0.5)
    return False


def start_through_proxy(
    site: ProxiedBroker, topics: Topics, media: Path, model: Path, start: Any
) -> Any:
    settings = service_settings(site.broker, topics, media, model)
    proxied = settings.kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{site.proxy.port}"}
    )
    return start(settings.model_copy(update={"kafka": proxied}))


def new_uploads(media: Path, tag: str) -> list[Any]:
    return [file_upload(f"{tag}-{i}", media / "no_face.mp4") for i in range(4)]


def test_after_a_network_outage_the_service_publishes_again(
    site: ProxiedBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh().create(site.broker)
    service = start_through_proxy(site, topics, media, reference_model, start_service)
    publish(site.broker, topics, new_uploads(media, "before"))
    assert wait_for(site.broker, topics, expected=4, timeout_s=120).count == 4

    # Taken just before the cut, screened while it lasts: their outcomes wait for the link.
    during = [file_upload(f"during-{i}", media / "moving_face.mp4") for i in range(2)]
    publish(site.broker, topics, during)
    time.sleep(2)
    site.proxy.cut()
    cut = time.monotonic()
    assert wait_until_not_ready(service, timeout_s=OUTAGE_S), "ready while cut off"
    time.sleep(max(0.0, cut + OUTAGE_S - time.monotonic()))
    site.proxy.restore()
    restored = time.monotonic()
    publish(site.broker, topics, new_uploads(media, "after"))

    published = wait_for(site.broker, topics, expected=10, timeout_s=120)
    recovered_s = time.monotonic() - restored
    print(f"network outage of {OUTAGE_S:.0f} s: all outcomes {recovered_s:.1f} s after restore")
    ids = [v.data.video_id for v in published.verdicts]
    expected = {f"during-{i}" for i in range(2)} | {f"after-{i}" for i in range(4)}
    assert expected <= set(ids)
    for video_id in expected:  # a duplicate is the same event, never a second verdict
        assert len({v.id for v in published.verdicts if v.data.video_id == video_id}) == 1
    assert readiness(service) == 200


def test_after_a_broker_restart_the_service_publishes_again(
    site: ProxiedBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    """The restarted broker (memory storage) has forgotten the topics and the group.

    It also never answers OffsetOutOfRange, so the consumer keeps fetching from
    its old position (1) in the new, empty partition 0: a filler record takes
    offset 0 there, and the uploads after it are the ones the consumer reads.
    """
    topics = Topics.fresh(partitions=1).create(site.broker)
    service = start_through_proxy(site, topics, media, reference_model, start_service)
    publish(site.broker, topics, [file_upload("before", media / "no_face.mp4")])
    assert wait_for(site.broker, topics, expected=1, timeout_s=120).count == 1

    site.broker.stop()
    stopped = time.monotonic()
    assert wait_until_not_ready(service, timeout_s=OUTAGE_S), "ready with the broker gone"
    time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))
    site.broker.start(site.broker_port)
    restarted = time.monotonic()
    topics.create(site.broker)  # (or the consumer's metadata request made it, with 4 partitions)
    filler = (b"filler", b"not an upload", [])
    produce(site.broker.bootstrap, topics.uploads, [filler, *new_uploads(media, "after")],
            partition=0)  # fmt: skip

    deadline = time.monotonic() + 120
    while True:  # the filler's outcome may come or not (see above): wait for the uploads'
        published = wait_for(site.broker, topics, expected=4, timeout_s=5)
        ids = {v.data.video_id for v in published.verdicts}
        if {f"after-{i}" for i in range(4)} <= ids or time.monotonic() > deadline:
            break
    recovered_s = time.monotonic() - restarted
    print(f"broker restart after {OUTAGE_S:.0f} s: all outcomes {recovered_s:.1f} s after restart")
    after = {v.data.video_id for v in published.verdicts if v.data.video_id.startswith("after")}
    assert after == {f"after-{i}" for i in range(4)}
    assert readiness(service) == 200
