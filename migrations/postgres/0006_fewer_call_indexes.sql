-- Every event rewrites its call's row; each index of `calls` whose key
-- changes costs another write. Two of them only served rare queries:
-- - the sweep's open calls: a partial index holds the calls not hung up,
--   and only until they are (an entry is written at newCall and removed at
--   hangup, instead of moved at every state change);
-- - retention: a call is initialized before it is updated, so calls last
--   updated before the cutoff are found through `calls_newest` by
--   `initialized_at_ms`; `calls_updated_at` moved at every event.
DROP INDEX calls_open;
DROP INDEX calls_updated_at;
CREATE INDEX calls_open ON calls (initialized_at_ms, call_id) WHERE state <> 'hangup';
