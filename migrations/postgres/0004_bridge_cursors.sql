-- Where each in-process bridge has delivered up to, shared by every
-- replica: whichever replica leads a bridge continues from its row.
CREATE TABLE bridge_cursors (
    name      TEXT PRIMARY KEY,
    after_seq BIGINT NOT NULL
);
