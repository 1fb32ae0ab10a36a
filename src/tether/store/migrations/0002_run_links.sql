-- A run started from another one (restart, fork) names it, and how.
ALTER TABLE runs ADD COLUMN linked_from TEXT;
ALTER TABLE runs ADD COLUMN link_kind TEXT;
CREATE INDEX runs_by_link ON runs (linked_from) WHERE linked_from IS NOT NULL;
