-- v001: the first schema. Times are stored twice: wall (epoch s, UTC) for people and records,
-- mono (the hub clock's monotonic s) for timers that must survive a wall-clock jump.
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    room TEXT,
    name TEXT,
    transport TEXT NOT NULL,
    address TEXT,
    manufacturer TEXT,
    model TEXT,
    battery REAL,
    online INTEGER,
    last_seen REAL,
    attrs TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    wall REAL NOT NULL,
    mono REAL NOT NULL,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    room TEXT,
    value TEXT,
    source TEXT NOT NULL
);
CREATE INDEX events_wall ON events (wall);
CREATE INDEX events_device_wall ON events (device, wall);

-- Signs of life per room and hour: what the learned rules and the activity picture need, kept
-- after the raw events have expired (privacy by design).
CREATE TABLE activity_hourly (
    hour REAL NOT NULL,          -- epoch s of the hour's start
    room TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (hour, room)
) WITHOUT ROWID;

CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    severity INTEGER NOT NULL,
    room TEXT,
    reason TEXT NOT NULL,
    detector TEXT NOT NULL,
    evidence TEXT NOT NULL DEFAULT '{}',
    wall REAL NOT NULL,
    mono REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',   -- open | acknowledged | resolved | cancelled
    updated REAL NOT NULL,
    closed REAL,
    note TEXT
);
CREATE INDEX incidents_state ON incidents (state);
CREATE INDEX incidents_wall ON incidents (wall);

CREATE TABLE escalation (
    incident_id TEXT PRIMARY KEY REFERENCES incidents (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    due_wall REAL,
    due_mono REAL,
    data TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    wall REAL NOT NULL,
    incident_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_incident ON audit (incident_id, id);
CREATE INDEX audit_wall ON audit (wall);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    incident_id TEXT,
    contact TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    created REAL NOT NULL,
    sent REAL,
    last_error TEXT
);
CREATE INDEX outbox_pending ON outbox (state, next_attempt);

-- Learned state of detectors (e.g. usual activity times), so learning survives a restart.
CREATE TABLE detector_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
