-- Each event's encoded sidecar.v1.CallEvent, sent as is to subscribers.
ALTER TABLE events ADD COLUMN wire BYTEA;
