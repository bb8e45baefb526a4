-- Reserved: another branch's migration takes this number (lead 0007, jobs 0008), so that this
-- branch's 0009 applies gaplessly. Delete this file when merging (msg branch).
SELECT 1;
