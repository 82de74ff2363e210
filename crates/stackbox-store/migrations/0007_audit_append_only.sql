-- StackBox store, schema version 7: the audit log is append-only.
--
-- The triggers that refuse UPDATE and DELETE on audit_log are in this migration's engine
-- companions (each engine has its own trigger syntax); a companion runs before its shared
-- file, so they could not sit in 0006 beside the table they guard. Never edit once released.
SELECT 1;
