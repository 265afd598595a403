-- Each event's encoded sidecar.v1.CallEvent, made once when it is stored and
-- sent as is to subscribers and pages, with no decoding of `payload`. NULL
-- for events stored before this migration; those are encoded when read.
ALTER TABLE events ADD COLUMN wire BLOB;
