-- Placeholder for migration 0007 (the lead's, issue 9 sections 1-4), so that this branch's 0008
-- applies gaplessly. Not to be merged: the lead's own 0007 replaces it.
SELECT 1;
