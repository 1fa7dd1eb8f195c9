"""Privacy by design: raw sensor events expire after a configured time.

Signs of life are already folded into `activity_hourly` as they are stored, so expiring a raw
event loses nothing the learned rules or the activity picture need. Closed incidents and their
audit are kept longer; open incidents, and outbox entries not yet delivered, are never expired.
"""

from __future__ import annotations

import sqlite_utils


def expire(
    db: sqlite_utils.Database, now: float, *, raw_events: float, incidents: float, activity: float
) -> dict[str, int]:
    """Delete what is older than its limit; returns how many rows each table lost."""
    removed = {
        "events": db.execute("DELETE FROM events WHERE wall < ?", [now - raw_events]).rowcount,
        "activity_hourly": db.execute(
            "DELETE FROM activity_hourly WHERE hour < ?", [now - activity]
        ).rowcount,
    }
    cutoff = now - incidents
    removed["audit"] = db.execute(
        "DELETE FROM audit WHERE wall < ? AND (incident_id IS NULL OR incident_id IN"
        " (SELECT id FROM incidents WHERE state IN ('resolved', 'cancelled') AND closed < ?))",
        [cutoff, cutoff],
    ).rowcount
    removed["outbox"] = db.execute(
        "DELETE FROM outbox WHERE state = 'sent' AND created < ?", [cutoff]
    ).rowcount
    removed["incidents"] = db.execute(
        "DELETE FROM incidents WHERE state IN ('resolved', 'cancelled') AND closed < ?", [cutoff]
    ).rowcount
    return removed
