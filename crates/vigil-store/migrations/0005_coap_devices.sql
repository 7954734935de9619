-- CoAP devices Vigil has found (multicast discovery, a probe, the
-- configuration): where they answer and the resources their
-- /.well-known/core listed (JSON array), so a restart probes and observes
-- them again without waiting for the next discovery.
CREATE TABLE coap_devices (
    device_id   INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    address     TEXT    NOT NULL,
    found_by    TEXT    NOT NULL,
    resources   TEXT    NOT NULL,
    error       TEXT    NULL,
    answered_at INTEGER NOT NULL
);
