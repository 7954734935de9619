-- Devices as conventions describe them, their presence with its history,
-- alert rules and alerts, and the webhook outbox.

-- What the device says about itself (its convention), where it comes from,
-- and what the user set. `name` is the device's own; `display_name` the
-- user's, which wins when shown.
ALTER TABLE devices ADD COLUMN convention   TEXT NOT NULL DEFAULT 'topic';
ALTER TABLE devices ADD COLUMN root         TEXT NULL;
ALTER TABLE devices ADD COLUMN client_id    TEXT NULL;
ALTER TABLE devices ADD COLUMN name         TEXT NULL;
ALTER TABLE devices ADD COLUMN model        TEXT NULL;
ALTER TABLE devices ADD COLUMN manufacturer TEXT NULL;
ALTER TABLE devices ADD COLUMN firmware     TEXT NULL;
ALTER TABLE devices ADD COLUMN display_name TEXT NULL;
ALTER TABLE devices ADD COLUMN group_name   TEXT NULL;
ALTER TABLE devices ADD COLUMN hidden       INTEGER NOT NULL DEFAULT 0;

-- Presence now, so that it survives a restart. Intervals in microseconds.
ALTER TABLE devices ADD COLUMN presence          TEXT    NOT NULL DEFAULT 'unknown';
ALTER TABLE devices ADD COLUMN presence_since    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN presence_reason   TEXT    NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN last_alive        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN learned_interval  INTEGER NULL;
ALTER TABLE devices ADD COLUMN expected_interval INTEGER NULL;
ALTER TABLE devices ADD COLUMN stale_after       INTEGER NULL;

-- A metric's unit, and whether its last value is stale (Sparkplug death).
ALTER TABLE series ADD COLUMN unit  TEXT NULL;
ALTER TABLE series ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;

-- Every presence change. Never deleted by message retention: it is small,
-- and it is the record of when a patient's device was unreachable.
CREATE TABLE presence_history (
    id         INTEGER PRIMARY KEY,
    device_id  INTEGER NOT NULL REFERENCES devices (id) DEFERRABLE INITIALLY DEFERRED,
    at         INTEGER NOT NULL,
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    source     TEXT    NOT NULL
);
CREATE INDEX presence_history_device ON presence_history (device_id, at);

-- Alert rules as JSON documents (vigil_core::alert::AlertRule): the rule's
-- shape belongs to the core, the store only keeps it.
CREATE TABLE alert_rules (
    id   INTEGER PRIMARY KEY,
    rule TEXT NOT NULL
);

-- One row per alert occurrence (a rule firing for a device), updated as it
-- is acknowledged and cleared: the table is the alert history.
CREATE TABLE alerts (
    id         INTEGER PRIMARY KEY,
    rule_id    INTEGER NOT NULL,
    device_key TEXT    NOT NULL,
    severity   TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    fired_at   INTEGER NOT NULL,
    acked_at   INTEGER NULL,
    acked_by   TEXT    NULL,
    cleared_at INTEGER NULL,
    value      REAL    NULL,
    message    TEXT    NOT NULL
);
CREATE INDEX alerts_active ON alerts (state) WHERE state <> 'cleared';
CREATE INDEX alerts_device ON alerts (device_key, id);

-- Webhook deliveries not yet acknowledged by the receiver, so an alert
-- raised while the network is down is delivered when it comes back, also
-- after a restart.
CREATE TABLE webhook_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   INTEGER NOT NULL,
    url          TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT    NULL
);
