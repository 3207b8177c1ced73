-- Backchannel client store, schema 2: emoji reactions to messages.
-- A reaction belongs to its message: deleting or erasing the message erases them.
CREATE TABLE reactions (
    room_id    BLOB NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    message_id BLOB NOT NULL,
    sender_id  BLOB NOT NULL,
    emoji      TEXT NOT NULL,
    reacted_at REAL NOT NULL,
    PRIMARY KEY (room_id, message_id, sender_id, emoji)
) WITHOUT ROWID;
CREATE TRIGGER reactions_follow_message_delete AFTER DELETE ON messages BEGIN
    DELETE FROM reactions WHERE room_id = old.room_id AND message_id = old.message_id;
END;
CREATE TRIGGER reactions_follow_message_tombstone AFTER UPDATE OF deleted ON messages
WHEN new.deleted = 1 BEGIN
    DELETE FROM reactions WHERE room_id = new.room_id AND message_id = new.message_id;
END;
