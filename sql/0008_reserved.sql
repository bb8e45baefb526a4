-- Reserved: another branch's migration takes this number. Delete this file when merging (calls branch).
SELECT 1;
