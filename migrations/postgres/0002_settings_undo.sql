-- The whole settings (JSON) before and after each change, so a change can be
-- undone.
ALTER TABLE audit_log ADD COLUMN settings_before TEXT;
ALTER TABLE audit_log ADD COLUMN settings_after TEXT;
