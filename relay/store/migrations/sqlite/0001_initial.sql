-- Mailboxes: public capability keys, counters and a coarse expiry time. Nothing else:
-- no creation time, no client identity, no address.
CREATE TABLE mailboxes (
    id          BLOB PRIMARY KEY,
    read_key    BLOB NOT NULL,
    write_key   BLOB NOT NULL,
    admin_key   BLOB NOT NULL,
    ttl         INTEGER NOT NULL,            -- seconds an entry lives
    epoch       INTEGER NOT NULL DEFAULT 0,  -- compare-and-set counter for commits
    head        INTEGER NOT NULL DEFAULT 0,  -- last sequence number assigned
    entries     INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL             -- rounded up to the expiry granularity
) WITHOUT ROWID;

CREATE INDEX mailboxes_expiry ON mailboxes (expires_at);

-- Entries: opaque blobs in sequence order. "idem" is the client's idempotency key.
-- A rowid table on purpose: WITHOUT ROWID stores rows inside the key's b-tree, where
-- kilobyte blobs spill into overflow pages and take several times their size on disk.
CREATE TABLE entries (
    mailbox     BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    blob        BLOB NOT NULL,
    idem        BLOB,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
);

CREATE UNIQUE INDEX entries_idem ON entries (mailbox, idem) WHERE idem IS NOT NULL;
CREATE INDEX entries_expiry ON entries (expires_at);
