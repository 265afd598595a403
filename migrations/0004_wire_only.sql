-- New events keep their content in `wire` only: `payload` is '' for them
-- (the JSON stays in rows stored before migration 0003, which have no wire
-- form). Readers decode `wire` when it is there.
--
-- No query reads the call log by first leg: its index only cost writes.
DROP INDEX calls_first_leg;
