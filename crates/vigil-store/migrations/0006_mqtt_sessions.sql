-- MQTT sessions kept for clients (3.1.1 clean session 0, MQTT 5 a Session
-- Expiry Interval) and the messages queued while their client is away, so
-- both outlive a restart of Vigil. The broker's router keeps them in memory
-- only; the front door reports every change and takes them back at start.
CREATE TABLE mqtt_sessions (
    client_id     TEXT    PRIMARY KEY,
    -- Seconds the session outlives its connection; 4294967295: forever.
    expiry_s      INTEGER NOT NULL,
    -- Since when the client has been away (µs); NULL while it is connected.
    away_since    INTEGER NULL,
    -- JSON: [{"filter": "...", "options": n}, ...]
    subscriptions TEXT    NOT NULL
);

CREATE TABLE mqtt_session_queue (
    client_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    queued_at INTEGER NOT NULL,
    -- The MQTT 5 PUBLISH packet, whole.
    packet    BLOB    NOT NULL,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
