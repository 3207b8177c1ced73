-- Backchannel client store, schema 3: a message is (room, author, id), never (room, id).
-- Message ids are chosen by their senders, so any member can reuse anyone's. Keyed by
-- (room, id) alone, a member who posted under another's id was recorded as that id's
-- owner and could then edit or delete the other's message. Now every lookup names the
-- author, and `ref` (SHA-256 over author and id, see records.message_ref) is the one
-- handle UIs use. Runs with foreign keys off (database.apply_migrations), as SQLite's
-- table-rebuild procedure requires, and is checked with foreign_key_check before commit.

CREATE TABLE messages_v3 (
    id            INTEGER PRIMARY KEY,           -- local row id: FTS key and paging tie-break
    room_id       BLOB NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    ref           BLOB NOT NULL,                 -- message_ref(sender_id, message_id)
    message_id    BLOB NOT NULL,                 -- sender-chosen, unique per sender
    sender_id     BLOB NOT NULL,
    sender_name   TEXT NOT NULL,
    sent_at       REAL NOT NULL,                 -- sender's clock
    received_at   REAL NOT NULL,                 -- our clock
    kind          TEXT NOT NULL,
    body          TEXT NOT NULL,
    reply_to      BLOB,                          -- the id of the message it answers ...
    reply_author  BLOB,                          -- ... and that message's author (both or neither)
    attachments   BLOB,                          -- opaque attachment metadata
    outgoing      INTEGER NOT NULL DEFAULT 0 CHECK (outgoing IN (0, 1)),
    edited_at     REAL,
    deleted       INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    delivered_seq INTEGER,                       -- relay seq once the relay acknowledged it
    UNIQUE (room_id, sender_id, message_id),
    UNIQUE (room_id, ref),
    CHECK ((reply_to IS NULL) = (reply_author IS NULL))
);

-- Old ids were unique per room, so a reply's author is the one sender of that id there;
-- a reply whose target was never stored loses its link (its author cannot be known).
INSERT INTO messages_v3 (id, room_id, ref, message_id, sender_id, sender_name, sent_at,
                         received_at, kind, body, reply_to, reply_author, attachments,
                         outgoing, edited_at, deleted, delivered_seq)
SELECT m.id, m.room_id, bc_message_ref(m.sender_id, m.message_id), m.message_id, m.sender_id,
       m.sender_name, m.sent_at, m.received_at, m.kind, m.body, t.message_id, t.sender_id,
       m.attachments, m.outgoing, m.edited_at, m.deleted, m.delivered_seq
FROM messages AS m
LEFT JOIN messages AS t ON t.room_id = m.room_id AND t.message_id = m.reply_to;

-- Reactions hang on the local row of the message they answer, which names its author.
CREATE TABLE reactions_v3 (
    message_ref INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    sender_id   BLOB NOT NULL,
    emoji       TEXT NOT NULL,
    reacted_at  REAL NOT NULL,
    PRIMARY KEY (message_ref, sender_id, emoji)
) WITHOUT ROWID;
INSERT INTO reactions_v3 (message_ref, sender_id, emoji, reacted_at)
SELECT m.id, r.sender_id, r.emoji, r.reacted_at
FROM reactions AS r JOIN messages AS m ON m.room_id = r.room_id AND m.message_id = r.message_id;

-- The outbox names the local message it posts by its ref (always one of ours).
ALTER TABLE outbox ADD COLUMN ref BLOB;
UPDATE outbox SET ref = (
    SELECT bc_message_ref(m.sender_id, m.message_id) FROM messages AS m
    WHERE m.room_id = outbox.room_id AND m.message_id = outbox.message_id
) WHERE message_id IS NOT NULL;
ALTER TABLE outbox DROP COLUMN message_id;

DROP TABLE reactions;
DROP TABLE messages;   -- its triggers and indexes go with it; rows were copied with their ids
ALTER TABLE messages_v3 RENAME TO messages;
ALTER TABLE reactions_v3 RENAME TO reactions;

CREATE INDEX messages_by_time ON messages (room_id, sent_at, id);
CREATE INDEX messages_by_arrival ON messages (room_id, received_at);
CREATE INDEX messages_by_id ON messages (room_id, message_id);   -- replies naming a wrong author

-- The FTS index is keyed by row id, which the copy kept: only its triggers are re-made.
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
CREATE TRIGGER reactions_follow_message_tombstone AFTER UPDATE OF deleted ON messages
WHEN new.deleted = 1 BEGIN
    DELETE FROM reactions WHERE message_ref = new.id;
END;
