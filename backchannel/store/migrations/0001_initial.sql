-- Backchannel client store, schema 1. Runs inside one transaction (see database.py).
-- Every table lives in the SQLCipher-encrypted file; nothing here is ever plaintext on disk.

-- Profile-wide key/value pairs: display name, relay URL, identity keys (opaque bytes).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- One row per dialogue room. state and mailbox are opaque to the store
-- (the serialized MLS group + room state; the relay mailbox ids and capabilities).
CREATE TABLE rooms (
    room_id           BLOB PRIMARY KEY,
    title             TEXT NOT NULL,
    state             BLOB,
    mailbox           BLOB,
    retention_seconds INTEGER CHECK (retention_seconds IS NULL OR retention_seconds > 0),
    joined            INTEGER NOT NULL DEFAULT 1 CHECK (joined IN (0, 1)),
    created_at        REAL NOT NULL,
    left_at           REAL
) WITHOUT ROWID;

-- Last relay sequence number processed per mailbox; moved in the same transaction
-- as the messages derived from it, so a crash neither loses nor replays them.
CREATE TABLE cursors (
    mailbox_id BLOB PRIMARY KEY,
    room_id    BLOB REFERENCES rooms (room_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 0)
) WITHOUT ROWID;
CREATE INDEX cursors_by_room ON cursors (room_id);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,           -- local row id: FTS key and paging tie-break
    room_id       BLOB NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    message_id    BLOB NOT NULL,                 -- sender-chosen, unique per room
    sender_id     BLOB NOT NULL,
    sender_name   TEXT NOT NULL,
    sent_at       REAL NOT NULL,                 -- sender's clock
    received_at   REAL NOT NULL,                 -- our clock
    kind          TEXT NOT NULL,
    body          TEXT NOT NULL,
    reply_to      BLOB,
    attachments   BLOB,                          -- opaque attachment metadata
    outgoing      INTEGER NOT NULL DEFAULT 0 CHECK (outgoing IN (0, 1)),
    edited_at     REAL,
    deleted       INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    delivered_seq INTEGER,                       -- relay seq once the relay acknowledged it
    UNIQUE (room_id, message_id)
);
CREATE INDEX messages_by_time ON messages (room_id, sent_at, id);
CREATE INDEX messages_by_arrival ON messages (room_id, received_at);

-- Word search over bodies. External content: the index holds tokens, not a second copy.
-- secure-delete makes a delete remove tokens from the index at once rather than
-- appending a delete marker next to the old ones.
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    body,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;

-- Attachment contents, in chunks, erased with their message.
CREATE TABLE attachment_chunks (
    message_ref INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    data        BLOB NOT NULL,
    PRIMARY KEY (message_ref, idx)
) WITHOUT ROWID;

CREATE TABLE members (
    room_id              BLOB NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    member_id            BLOB NOT NULL,
    display_name         TEXT NOT NULL,
    fingerprint          BLOB NOT NULL,          -- current identity key fingerprint
    role                 TEXT NOT NULL,
    verified_fingerprint BLOB,                   -- the key the user compared, if any
    verified_at          REAL,
    PRIMARY KEY (room_id, member_id)
) WITHOUT ROWID;

-- Posts waiting for the relay's acknowledgement, in the order they were queued.
CREATE TABLE outbox (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key BLOB NOT NULL UNIQUE,
    room_id         BLOB REFERENCES rooms (room_id) ON DELETE CASCADE,
    mailbox_id      BLOB NOT NULL,
    payload         BLOB NOT NULL,
    message_id      BLOB,                        -- the local message this posts, if any
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at REAL
);
CREATE INDEX outbox_by_mailbox ON outbox (mailbox_id, position);

-- Keys the relay has acknowledged, so the same key is never queued (and posted) again.
CREATE TABLE acknowledged (
    idempotency_key BLOB PRIMARY KEY,
    mailbox_id      BLOB NOT NULL,
    seq             INTEGER NOT NULL,
    acked_at        REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX acknowledged_by_time ON acknowledged (acked_at);
