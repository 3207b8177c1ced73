-- Backchannel client store, schema 5: posts the relay refused for good.
-- A post the relay refuses for good (too large, malformed, no access to the mailbox)
-- leaves the outbox, so it never holds back the posts queued after it. The message it
-- carried, if any, keeps the time of the refusal here: it was not delivered and will
-- not be, which a UI tells apart from "still sending" (delivered_seq NULL).
ALTER TABLE messages ADD COLUMN refused_at REAL;
