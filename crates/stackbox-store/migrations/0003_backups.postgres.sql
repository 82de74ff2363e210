-- StackBox store, schema version 3, PostgreSQL's part (runs before 0003_backups.sql, in the
-- same transaction): deployments.kind accepts the backup kinds.
--
-- PostgreSQL replaces the constraint in place (0001's column CHECK got the default name
-- deployments_kind_check); adding it checks the existing rows, which all hold older kinds.
-- Never edit this file once released.

ALTER TABLE deployments
    DROP CONSTRAINT deployments_kind_check,
    ADD CONSTRAINT deployments_kind_check CHECK (kind IN ('create', 'redeploy', 'stop', 'start',
        'destroy', 'backup', 'restore', 'verify', 'clone'));
