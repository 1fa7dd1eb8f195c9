-- v002: escalation and delivery. An outbox row tries its contact's channels in order (fallback);
-- `channel_index` is the one being tried and `channel_attempts` its failed tries so far.
-- Outbox states: pending | sent | failed | cancelled (superseded: the incident was acknowledged).
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'alert';
ALTER TABLE outbox ADD COLUMN channel_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN channel_attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_incident ON outbox (incident_id, state);

-- Escalation states: pre_alarm | step | acknowledged | resolved | cancelled | merged | none.
CREATE INDEX escalation_state ON escalation (state);

-- Secrets the hub makes for itself (the key that signs one-tap acknowledge links), so links
-- sent before a restart still work after it.
CREATE TABLE alert_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
);
