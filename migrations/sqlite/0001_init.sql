-- sipgate-sidecar schema, version 1.
-- Kept portable: it runs on SQLite as is and on PostgreSQL with the
-- AUTOINCREMENT column changed to BIGSERIAL (and INTEGER to BIGINT).

-- The durable event log. `seq` is assigned by the single writer, gap-free.
-- `payload` is JSON: {"event": Event (incl. raw form), "decision": Decision|null,
-- "call": CallRecord after this event}.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL,
    call_id        TEXT    NOT NULL,
    direction      TEXT,
    from_number    TEXT    NOT NULL,
    to_number      TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    synthetic      BOOLEAN NOT NULL,
    -- "{kind}:{call_id}" for newCall/answer/hangup from sipgate; NULL for
    -- dtmf (may repeat) and synthetic events.
    dedupe_key     TEXT UNIQUE,
    payload        TEXT    NOT NULL
);
CREATE INDEX events_received_at ON events (received_at_ms);

-- The call log: one row per sipgate callId. Queryable fields are columns;
-- `record` is the whole CallRecord as JSON.
CREATE TABLE calls (
    call_id              TEXT PRIMARY KEY,
    direction            TEXT,
    from_number          TEXT    NOT NULL,
    to_number            TEXT    NOT NULL,
    state                TEXT    NOT NULL,
    done                 BOOLEAN NOT NULL,
    cause                TEXT    NOT NULL,
    initialized_at_ms    INTEGER NOT NULL,
    start_at_ms          INTEGER,
    end_at_ms            INTEGER,
    updated_at_ms        INTEGER NOT NULL,
    orig_call_id         TEXT    NOT NULL,
    first_leg_call_id    TEXT    NOT NULL,
    xcid                 TEXT    NOT NULL,
    ended_synthetically  BOOLEAN NOT NULL,
    record               TEXT    NOT NULL
);
-- Newest-first listing (ties by call_id) and its number filter.
CREATE INDEX calls_newest ON calls (initialized_at_ms DESC, call_id DESC);
CREATE INDEX calls_from ON calls (from_number);
CREATE INDEX calls_to ON calls (to_number);
-- The sweep: open calls by age.
CREATE INDEX calls_open ON calls (state, initialized_at_ms);
-- Retention purge.
CREATE INDEX calls_updated_at ON calls (updated_at_ms);
-- Forward and voicemail legs of one call flow.
CREATE INDEX calls_first_leg ON calls (first_leg_call_id);

-- Settings. `position` keeps the admin's order (first routing match wins).
CREATE TABLE block_list (
    position INTEGER NOT NULL,
    pattern  TEXT    NOT NULL UNIQUE,
    note     TEXT    NOT NULL
);

CREATE TABLE routing_table (
    position  INTEGER NOT NULL,
    dest      TEXT    NOT NULL UNIQUE,
    caller_id TEXT    NOT NULL,
    note      TEXT    NOT NULL
);

-- "default_caller_id" ("" = unset) and "version".
CREATE TABLE settings_kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    client TEXT    NOT NULL,
    action TEXT    NOT NULL,
    detail TEXT    NOT NULL
);
