"""Request metrics that need no server: the late-window count."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from chorus.server.metrics import Metrics


def _value(metrics: Metrics, name: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("door") == "wyoming":
                return sample.value
    raise AssertionError(f"{name} not exposed")


def test_a_piece_ready_after_the_audio_before_it_ran_out_is_late() -> None:
    metrics = Metrics()
    with metrics.request("wyoming", "pcm") as record:
        record.audio(50, 1000)  # 50 ms of audio: playback starts now
        record.audio(50, 1000)  # ready at once: on time
        time.sleep(0.3)  # the 100 ms sent so far ran out long ago
        record.audio(50, 1000)  # late
        record.audio(5000, 1000)  # ready at once after it: on time again
    assert record.late == 1
    assert _value(metrics, "chorus_late_windows_total") == 1
    assert _value(metrics, "chorus_audio_windows_total") == 4
    assert _value(metrics, "chorus_time_to_first_audio_seconds_count") == 1
