-- Backchannel relay on PostgreSQL, schema version 1.
-- Same data as the SQLite store: public capability keys, opaque blobs, sequence
-- numbers, epochs and coarse expiry times. No addresses, no client identities.

CREATE TABLE relay_mailboxes (
    id          bytea PRIMARY KEY,
    read_key    bytea NOT NULL,
    write_key   bytea NOT NULL,
    admin_key   bytea NOT NULL,
    ttl         bigint NOT NULL,
    epoch       bigint NOT NULL DEFAULT 0,
    head        bigint NOT NULL DEFAULT 0,
    entries     bigint NOT NULL DEFAULT 0,
    bytes       bigint NOT NULL DEFAULT 0,
    expires_at  bigint NOT NULL
);
CREATE INDEX relay_mailboxes_expiry ON relay_mailboxes (expires_at);

CREATE TABLE relay_entries (
    mailbox     bytea NOT NULL,
    seq         bigint NOT NULL,
    blob        bytea NOT NULL,
    idem        bytea,
    expires_at  bigint NOT NULL,
    PRIMARY KEY (mailbox, seq)
);
CREATE UNIQUE INDEX relay_entries_idem ON relay_entries (mailbox, idem) WHERE idem IS NOT NULL;
CREATE INDEX relay_entries_expiry ON relay_entries (expires_at);

-- Store-wide counters, split in 16 shards (by the mailbox id's first byte) so that
-- appends to different mailboxes do not queue on one row.
CREATE TABLE relay_totals (
    shard       int PRIMARY KEY,
    mailboxes   bigint NOT NULL DEFAULT 0,
    entries     bigint NOT NULL DEFAULT 0,
    bytes       bigint NOT NULL DEFAULT 0
);
INSERT INTO relay_totals (shard) SELECT generate_series(0, 15);

CREATE FUNCTION relay_round_up(p_when bigint, p_granularity bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((p_when + p_granularity - 1) / p_granularity) * p_granularity
$$;

CREATE FUNCTION relay_shard(p_id bytea) RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT get_byte(p_id, 0) % 16 $$;

-- Remove a mailbox and its entries, keeping the totals right. Caller holds the row lock.
CREATE FUNCTION relay_drop_mailbox(p_id bytea) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m relay_mailboxes%ROWTYPE;
BEGIN
    DELETE FROM relay_mailboxes WHERE id = p_id RETURNING * INTO m;
    IF FOUND THEN
        DELETE FROM relay_entries WHERE mailbox = p_id;
        UPDATE relay_totals SET mailboxes = mailboxes - 1, entries = entries - m.entries,
            bytes = bytes - m.bytes WHERE shard = relay_shard(p_id);
    END IF;
END $$;

-- Errors leave through SQLSTATEs of our own class 'BC': BC401 no such mailbox,
-- BC409 stale epoch (DETAIL holds the current epoch), BC410 mailbox exists,
-- BC413 mailbox full, BC507 store full.

CREATE FUNCTION relay_create(
    p_id bytea, p_read bytea, p_write bytea, p_admin bytea, p_ttl bigint,
    p_now bigint, p_granularity bigint, p_store_max bigint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    old_expiry bigint;
BEGIN
    IF (SELECT sum(bytes) FROM relay_totals) >= p_store_max THEN
        RAISE EXCEPTION 'store full' USING ERRCODE = 'BC507';
    END IF;
    SELECT expires_at INTO old_expiry FROM relay_mailboxes WHERE id = p_id FOR UPDATE;
    IF FOUND THEN
        IF old_expiry > p_now THEN
            RAISE EXCEPTION 'exists' USING ERRCODE = 'BC410';
        END IF;
        PERFORM relay_drop_mailbox(p_id);
    END IF;
    INSERT INTO relay_mailboxes (id, read_key, write_key, admin_key, ttl, expires_at)
        VALUES (p_id, p_read, p_write, p_admin, p_ttl, relay_round_up(p_now + p_ttl, p_granularity));
    UPDATE relay_totals SET mailboxes = mailboxes + 1 WHERE shard = relay_shard(p_id);
EXCEPTION
    WHEN unique_violation THEN  -- another node created the same id meanwhile
        RAISE EXCEPTION 'exists' USING ERRCODE = 'BC410';
END $$;

-- Append entries atomically; entry 1 is the main one, the rest are 'also' entries.
-- Row locks on every mailbox involved, taken in id order, allocate sequence numbers
-- without gaps or duplicates across nodes and rule out deadlocks.
-- p_pending NULL: the call stands alone and updates relay_totals itself. Otherwise the
-- caller (relay_append_batch) already wrote p_pending bytes in this transaction that
-- relay_totals does not show yet, and it adds this call's entries to the totals later.
CREATE FUNCTION relay_append(
    p_mailboxes bytea[], p_blobs bytea[], p_keys bytea[], p_ttls bigint[],
    p_epoch bigint, p_now bigint, p_granularity bigint,
    p_max_entries bigint, p_max_bytes bigint, p_store_max bigint, p_node text,
    p_pending bigint DEFAULT NULL
) RETURNS TABLE (o_seq bigint, o_duplicate boolean, o_epoch bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n int := array_length(p_mailboxes, 1);
    m relay_mailboxes%ROWTYPE;
    v_found bigint;
    v_total bigint;
    v_size bigint;
    v_epoch bigint;
BEGIN
    PERFORM 1 FROM relay_mailboxes WHERE id = ANY (p_mailboxes) ORDER BY id FOR UPDATE;
    SELECT * INTO m FROM relay_mailboxes WHERE id = p_mailboxes[1] AND expires_at > p_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'denied' USING ERRCODE = 'BC401';
    END IF;
    v_epoch := m.epoch;
    IF p_keys[1] IS NOT NULL THEN
        SELECT seq INTO v_found FROM relay_entries WHERE mailbox = p_mailboxes[1] AND idem = p_keys[1];
        IF FOUND THEN  -- a retry: report the earlier append and write nothing
            RETURN QUERY SELECT v_found, true, v_epoch;
            FOR i IN 2..coalesce(n, 1) LOOP
                RETURN QUERY SELECT coalesce((SELECT seq FROM relay_entries
                    WHERE mailbox = p_mailboxes[i] AND idem = p_keys[i]), 0::bigint), true, v_epoch;
            END LOOP;
            RETURN;
        END IF;
    END IF;
    IF p_epoch IS NOT NULL THEN
        IF m.epoch <> p_epoch THEN
            RAISE EXCEPTION 'stale epoch' USING ERRCODE = 'BC409', DETAIL = m.epoch::text;
        END IF;
        v_epoch := m.epoch + 1;
        UPDATE relay_mailboxes SET epoch = v_epoch WHERE id = p_mailboxes[1];
    END IF;
    SELECT sum(bytes) + coalesce(p_pending, 0) INTO v_total FROM relay_totals;
    FOR i IN 1..n LOOP
        IF i > 1 AND p_keys[i] IS NOT NULL THEN
            SELECT seq INTO v_found FROM relay_entries WHERE mailbox = p_mailboxes[i] AND idem = p_keys[i];
            IF FOUND THEN
                RETURN QUERY SELECT v_found, true, v_epoch;
                CONTINUE;
            END IF;
        END IF;
        SELECT * INTO m FROM relay_mailboxes WHERE id = p_mailboxes[i] AND expires_at > p_now;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'denied' USING ERRCODE = 'BC401';
        END IF;
        v_size := octet_length(p_blobs[i]);
        IF m.entries + 1 > p_max_entries OR m.bytes + v_size > p_max_bytes THEN
            RAISE EXCEPTION 'mailbox full' USING ERRCODE = 'BC413';
        END IF;
        IF v_total + v_size > p_store_max THEN
            RAISE EXCEPTION 'store full' USING ERRCODE = 'BC507';
        END IF;
        v_total := v_total + v_size;
        INSERT INTO relay_entries (mailbox, seq, blob, idem, expires_at) VALUES (
            p_mailboxes[i], m.head + 1, p_blobs[i], p_keys[i],
            relay_round_up(p_now + least(coalesce(p_ttls[i], m.ttl), m.ttl), p_granularity));
        UPDATE relay_mailboxes SET head = head + 1, entries = entries + 1, bytes = bytes + v_size,
            expires_at = greatest(expires_at, relay_round_up(p_now + m.ttl, p_granularity))
            WHERE id = p_mailboxes[i];
        IF p_pending IS NULL THEN
            UPDATE relay_totals SET entries = entries + 1, bytes = bytes + v_size
                WHERE shard = relay_shard(p_mailboxes[i]);
        END IF;
        -- Delivered at commit; carries only the mailbox and sequence number.
        PERFORM pg_notify('backchannel_relay:' || current_schema(), 'a ' || p_node || ' ' || encode(p_mailboxes[i], 'hex')
            || ' ' || (m.head + 1)::text);
        RETURN QUERY SELECT m.head + 1, false, v_epoch;
    END LOOP;
END $$;

-- Group commit: many appends (each as relay_append takes them) in one transaction, so
-- they share one commit and one WAL flush. Entries are flattened into one set of
-- arrays; p_counts[j] says how many belong to append j, whose epoch and time are
-- p_epochs[j] and p_nows[j]. One row per entry of a successful append (o_error NULL),
-- or one row per failed append with its SQLSTATE and DETAIL: each append runs in its
-- own exception block (a subtransaction, i.e. a savepoint), so a refused append rolls
-- back alone and the others stay.
--
-- Lock order, so batches of different connections and nodes never deadlock each
-- other: first every mailbox row of the whole batch, in id order, in one statement
-- (jobs then only re-take locks they hold, whatever the order of their own and their
-- 'also' mailboxes); relay_totals last, in shard order, just before the commit.
-- relay_create and relay_trim also take their mailbox row before their one shard row,
-- and relay_sweep waits for no mailbox row and takes its shard rows last, in order.
CREATE FUNCTION relay_append_batch(
    p_counts int[], p_mailboxes bytea[], p_blobs bytea[], p_keys bytea[], p_ttls bigint[],
    p_epochs bigint[], p_nows bigint[], p_granularity bigint,
    p_max_entries bigint, p_max_bytes bigint, p_store_max bigint, p_node text
) RETURNS TABLE (o_job int, o_seq bigint, o_duplicate boolean, o_epoch bigint,
                 o_error text, o_detail text)
LANGUAGE plpgsql AS $$
DECLARE
    v_first int := 1;
    v_last int;
    v_pending bigint := 0;
    v_entries bigint[] := array_fill(0::bigint, ARRAY[16], ARRAY[0]);
    v_bytes bigint[] := array_fill(0::bigint, ARRAY[16], ARRAY[0]);
    v_seqs bigint[];
    v_dups boolean[];
    v_eps bigint[];
    v_state text;
    v_detail text;
    v_ok boolean;
    v_size bigint;
    v_shard int;
BEGIN
    PERFORM 1 FROM relay_mailboxes WHERE id = ANY (p_mailboxes) ORDER BY id FOR UPDATE;
    FOR j IN 1..coalesce(array_length(p_counts, 1), 0) LOOP
        v_last := v_first + p_counts[j] - 1;
        v_ok := true;
        BEGIN
            SELECT array_agg(r.o_seq ORDER BY r.ord), array_agg(r.o_duplicate ORDER BY r.ord),
                   array_agg(r.o_epoch ORDER BY r.ord)
                INTO v_seqs, v_dups, v_eps
                FROM relay_append(p_mailboxes[v_first:v_last], p_blobs[v_first:v_last],
                    p_keys[v_first:v_last], p_ttls[v_first:v_last], p_epochs[j], p_nows[j],
                    p_granularity, p_max_entries, p_max_bytes, p_store_max, p_node, v_pending)
                    WITH ORDINALITY AS r(o_seq, o_duplicate, o_epoch, ord);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_detail = PG_EXCEPTION_DETAIL;
            v_ok := false;
        END;
        IF v_ok THEN
            FOR k IN 1..p_counts[j] LOOP
                IF NOT v_dups[k] THEN
                    v_size := octet_length(p_blobs[v_first + k - 1]);
                    v_shard := relay_shard(p_mailboxes[v_first + k - 1]);
                    v_pending := v_pending + v_size;
                    v_entries[v_shard] := v_entries[v_shard] + 1;
                    v_bytes[v_shard] := v_bytes[v_shard] + v_size;
                END IF;
                RETURN QUERY SELECT j, v_seqs[k], v_dups[k], v_eps[k], NULL::text, NULL::text;
            END LOOP;
        ELSE
            RETURN QUERY SELECT j, NULL::bigint, NULL::boolean, NULL::bigint, v_state, v_detail;
        END IF;
        v_first := v_last + 1;
    END LOOP;
    FOR s IN 0..15 LOOP
        IF v_entries[s] <> 0 THEN
            UPDATE relay_totals SET entries = entries + v_entries[s], bytes = bytes + v_bytes[s]
                WHERE shard = s;
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION relay_trim(p_id bytea, p_through bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_removed bigint;
    v_size bigint;
BEGIN
    PERFORM 1 FROM relay_mailboxes WHERE id = p_id FOR UPDATE;
    WITH gone AS (
        DELETE FROM relay_entries WHERE mailbox = p_id AND seq <= p_through RETURNING octet_length(blob) AS n
    ) SELECT count(*), coalesce(sum(gone.n), 0) INTO v_removed, v_size FROM gone;
    IF v_removed > 0 THEN
        UPDATE relay_mailboxes SET entries = entries - v_removed, bytes = bytes - v_size WHERE id = p_id;
        UPDATE relay_totals SET entries = entries - v_removed, bytes = bytes - v_size WHERE shard = relay_shard(p_id);
    END IF;
    RETURN v_removed;
END $$;

-- One sweep step: at most p_limit expired entries, then at most p_limit expired
-- mailboxes. Only one node sweeps at a time (an advisory lock others skip over).
-- Lock order: mailbox rows only with SKIP LOCKED (never waiting for one), relay_totals
-- last, in shard order, as relay_append_batch does: so the two cannot deadlock.
CREATE FUNCTION relay_sweep(p_now bigint, p_limit int)
RETURNS TABLE (o_entries bigint, o_mailboxes bigint, o_swept boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    m relay_mailboxes%ROWTYPE;
    v_count bigint;
    v_size bigint;
    v_shard int;
    d_mailboxes bigint[] := array_fill(0::bigint, ARRAY[16], ARRAY[0]);
    d_entries bigint[] := array_fill(0::bigint, ARRAY[16], ARRAY[0]);
    d_bytes bigint[] := array_fill(0::bigint, ARRAY[16], ARRAY[0]);
    n_entries bigint := 0;
    n_mailboxes bigint := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('backchannel_relay_sweep:' || current_schema())) THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint, false;
        RETURN;
    END IF;
    -- Mailbox row first, entries second: the lock order every function here follows.
    FOR r IN
        SELECT id FROM relay_mailboxes WHERE id IN (
            SELECT DISTINCT mailbox FROM relay_entries WHERE expires_at <= p_now LIMIT p_limit)
        ORDER BY id FOR UPDATE SKIP LOCKED
    LOOP
        WITH gone AS (
            DELETE FROM relay_entries WHERE mailbox = r.id AND expires_at <= p_now
            RETURNING octet_length(blob) AS size
        ) SELECT count(*), coalesce(sum(gone.size), 0) INTO v_count, v_size FROM gone;
        UPDATE relay_mailboxes SET entries = entries - v_count, bytes = bytes - v_size WHERE id = r.id;
        v_shard := relay_shard(r.id);
        d_entries[v_shard] := d_entries[v_shard] - v_count;
        d_bytes[v_shard] := d_bytes[v_shard] - v_size;
        n_entries := n_entries + v_count;
    END LOOP;
    FOR r IN SELECT id FROM relay_mailboxes WHERE expires_at <= p_now ORDER BY id LIMIT p_limit FOR UPDATE SKIP LOCKED LOOP
        DELETE FROM relay_mailboxes WHERE id = r.id RETURNING * INTO m;
        DELETE FROM relay_entries WHERE mailbox = r.id;
        v_shard := relay_shard(r.id);
        d_mailboxes[v_shard] := d_mailboxes[v_shard] - 1;
        d_entries[v_shard] := d_entries[v_shard] - m.entries;
        d_bytes[v_shard] := d_bytes[v_shard] - m.bytes;
        n_mailboxes := n_mailboxes + 1;
    END LOOP;
    FOR s IN 0..15 LOOP
        IF d_mailboxes[s] <> 0 OR d_entries[s] <> 0 OR d_bytes[s] <> 0 THEN
            UPDATE relay_totals SET mailboxes = mailboxes + d_mailboxes[s],
                entries = entries + d_entries[s], bytes = bytes + d_bytes[s] WHERE shard = s;
        END IF;
    END LOOP;
    RETURN QUERY SELECT n_entries, n_mailboxes, true;
END $$;
