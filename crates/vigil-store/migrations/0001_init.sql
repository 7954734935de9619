-- Vigil's first schema.
--
-- Timestamps are INTEGER microseconds since the Unix epoch (vigil_core::Micros).
-- `auto_vacuum = INCREMENTAL` is set by the connection before this file runs,
-- because SQLite only honours it before the first table exists.

-- One row per device identity (DeviceRule output). Never deleted by retention,
-- so the device list survives even when its messages have aged out.
CREATE TABLE devices (
    id            INTEGER PRIMARY KEY,
    key           TEXT    NOT NULL UNIQUE,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);

-- Topic names are interned: messages store an integer instead of repeating
-- the (often long) topic string in every row and in the topic index.
CREATE TABLE topics (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- AUTOINCREMENT so that ids never go backwards, even after retention has
-- deleted every message: ids are pagination cursors and "new since" marks.
--
-- Foreign keys are DEFERRABLE INITIALLY DEFERRED: they are still enforced, at
-- COMMIT, but an immediate foreign key forces SQLite to keep a statement
-- journal (a copy of every page touched) for each multi-row INSERT: the
-- largest avoidable cost in profiles of the writer.
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    topic_id   INTEGER NOT NULL REFERENCES topics (id) DEFERRABLE INITIALLY DEFERRED,
    device_id  INTEGER NULL REFERENCES devices (id) DEFERRABLE INITIALLY DEFERRED,
    client_id  TEXT    NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    payload    BLOB    NOT NULL,
    properties TEXT    NULL
);
CREATE INDEX messages_topic ON messages (topic_id, id);
CREATE INDEX messages_device ON messages (device_id, id);
CREATE INDEX messages_at ON messages (at);

-- One numeric metric of one device, with its latest value so the device list
-- needs no scan of `samples`.
CREATE TABLE series (
    id         INTEGER PRIMARY KEY,
    device_id  INTEGER NOT NULL REFERENCES devices (id) DEFERRABLE INITIALLY DEFERRED,
    metric     TEXT    NOT NULL,
    last_value REAL    NULL,
    last_at    INTEGER NULL,
    UNIQUE (device_id, metric)
);

-- One row per numeric sample, clustered by (series_id, at): a chart reads one
-- contiguous key range, and each insert touches one B-tree instead of a table
-- plus an index (the writer's main cost). The key makes a second sample of a
-- series at the same microsecond replace the first. No foreign key: only the
-- writer inserts here, with ids it just read from `series`, and checking one
-- per sample (two per message) cost about 8% of the writer's throughput.
CREATE TABLE samples (
    series_id INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    value     REAL    NOT NULL,
    PRIMARY KEY (series_id, at)
) WITHOUT ROWID;

-- The broker's retained message per topic (latest wins; an empty retained
-- payload deletes the row). Never deleted by retention.
CREATE TABLE retained (
    topic      TEXT    PRIMARY KEY,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    properties TEXT    NULL
);
