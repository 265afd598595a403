-- New rows keep their content in protobuf form only: `events.wire` (the
-- encoded CallEvent, since migration 0003) and `calls.wire` (the encoded
-- Call). Their `payload` and `record` are '' from now on; rows stored
-- before keep their JSON there, and readers decode whichever is present.
ALTER TABLE calls ADD COLUMN wire BLOB;

-- No query reads the call log by first leg: its index only cost writes.
DROP INDEX calls_first_leg;
