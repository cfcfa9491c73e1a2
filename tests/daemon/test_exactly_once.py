"""Exactly-once alerts through kill -9 on a real broker (a module of its own, so the suite's
two workers run it beside the at-least-once run)."""

from __future__ import annotations

import pytest

from tests.daemon.test_faults import trained_model
from tests.daemon.test_kill9 import five_sigkills

pytestmark = pytest.mark.kafka
__all__ = ["trained_model"]  # the module-scoped fixture, shared with test_faults


def test_five_sigkills_while_50k_events_flow_repeat_no_alert_exactly_once(
    kafka_bootstrap, new_topic, tmp_path, trained_model
):
    five_sigkills(kafka_bootstrap, new_topic, tmp_path, trained_model, "exactly_once")
