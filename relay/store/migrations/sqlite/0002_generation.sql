-- The store's generation (docs/relay-protocol.md, "Generations and restores"): one
-- row, written when the store is first opened. "id" is announced in every hello;
-- "restored" is set in a copy made by `backchannel-relay backup` or by
-- `backchannel-relay mark-restored`, and the next open then starts a new generation:
-- a new id, and every head and epoch raised to "floor" (derived from the time of
-- that restore; see restore_floor in base.py). No names, nothing about clients.
CREATE TABLE generation (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    id        BLOB NOT NULL,
    floor     INTEGER NOT NULL DEFAULT 0,
    restored  INTEGER NOT NULL DEFAULT 0
);
