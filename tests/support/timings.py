"""Producer, publish and claim timings other than the defaults, as environment variables.

The settings tests read them; the chart tests expect the chart to render them.
"""

from __future__ import annotations

TIMING_VARIABLES = {
    "DEEPSCREEN_KAFKA__PRODUCER_ACK_TIMEOUT_S": "12.5",
    "DEEPSCREEN_KAFKA__PRODUCER_LINGER_MS": "20",
    "DEEPSCREEN_KAFKA__PRODUCER_BATCH_BYTES": "65536",
    "DEEPSCREEN_KAFKA__PRODUCER_RETRIES": "9",
    "DEEPSCREEN_KAFKA__PUBLISH_BACKOFF_INITIAL_S": "0.1",
    "DEEPSCREEN_KAFKA__PUBLISH_BACKOFF_MAX_S": "2",
    "DEEPSCREEN_KAFKA__FLUSH_TIMEOUT_S": "45",
    "DEEPSCREEN_REDIS__CLAIM_POLL_S": "0.5",
}
