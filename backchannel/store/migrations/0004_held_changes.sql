-- Backchannel client store, schema 4: changes held until the message they change arrives.
-- An edit, delete or file chunk names its sender's own message. When it arrives first
-- (the relay reordered, or the sender's message is still on its way), dropping it would
-- leave a retracted or corrected message on screen for good; it waits here instead and
-- is applied, in arrival order, in the transaction that stores its message. Bounded per
-- room by the client (oldest first); erased with retention and with its room.
CREATE TABLE held_changes (
    id        INTEGER PRIMARY KEY,               -- arrival order
    room_id   BLOB NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    sender_id BLOB NOT NULL,                     -- the change's sender: its target's author
    target    BLOB NOT NULL,                     -- the target's sender-chosen id
    change    BLOB NOT NULL,                     -- the change, opaque to the store
    held_at   REAL NOT NULL                      -- our clock
);
CREATE INDEX held_changes_by_target ON held_changes (room_id, sender_id, target, id);
