-- Per-minute aggregates of every series, kept by the writer in the same
-- transaction as the samples, so that a chart over days or weeks reads one
-- row per minute (43,200 for 30 days) instead of one per sample (2.6 million
-- at 1 Hz). Windows whose buckets are shorter than a minute read `samples`.
-- A sample that replaces another at the very same µs is counted twice here
-- (min and max stay right; avg and count lean towards it).
CREATE TABLE samples_1m (
    series_id INTEGER NOT NULL,
    minute    INTEGER NOT NULL,   -- at / 60,000,000
    min       REAL    NOT NULL,
    max       REAL    NOT NULL,
    sum       REAL    NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (series_id, minute)
) WITHOUT ROWID;

INSERT INTO samples_1m (series_id, minute, min, max, sum, count)
    SELECT series_id, at / 60000000, min(value), max(value), total(value), count(*)
    FROM samples GROUP BY series_id, at / 60000000;
