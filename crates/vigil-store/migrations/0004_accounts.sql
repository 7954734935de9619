-- Who may log in to the embedded broker with a password: people ("user")
-- and devices ("device"). The password is kept only as an argon2id hash
-- (PHC string). `publish` and `subscribe` are the account's own topic-filter
-- rules as JSON arrays; NULL means the default for its kind.
CREATE TABLE accounts (
    name          TEXT    PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('user', 'device')),
    password_hash TEXT    NOT NULL,
    publish       TEXT    NULL,
    subscribe     TEXT    NULL,
    created_at    INTEGER NOT NULL
);
