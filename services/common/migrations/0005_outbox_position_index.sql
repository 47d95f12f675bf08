-- The outbox's positions are unique among positioned events only: an index of the unpositioned
-- rows' NULLs was one more index entry written for every event, and never read (the sequencer
-- finds those rows through crm_outbox_unsequenced). Readers ask for positions after a number,
-- which implies NOT NULL, so they use the partial index as they used the whole one.
ALTER TABLE crm_outbox DROP CONSTRAINT crm_outbox_position_key;
CREATE UNIQUE INDEX crm_outbox_position ON crm_outbox (position) WHERE position IS NOT NULL;
