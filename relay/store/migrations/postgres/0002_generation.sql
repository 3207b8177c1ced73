-- The store's generation (docs/relay-protocol.md, "Generations and restores"): one
-- row, written when the first node opens the store. "id" is announced in every hello;
-- "restored" is set by `backchannel-relay mark-restored` after a restore, and the next
-- node to open the store then starts a new generation: a new id, and every head and
-- epoch raised to "floor" (derived from the time of that restore; see restore_floor
-- in base.py). No names, nothing about clients.
CREATE TABLE relay_generation (
    one       smallint PRIMARY KEY CHECK (one = 1),
    id        bytea NOT NULL,
    floor     bigint NOT NULL DEFAULT 0,
    restored  boolean NOT NULL DEFAULT false
);
