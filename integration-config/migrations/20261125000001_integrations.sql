-- Integration configurations, versioned, with a history written by trigger and a NOTIFY on every change.
-- Runs with search_path set to the store's schema: every name below lands in that schema.

CREATE TABLE IF NOT EXISTS integrations (
    name text PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0),
    config jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

CREATE TABLE IF NOT EXISTS integrations_history (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    version bigint NOT NULL,
    operation text NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
    config jsonb NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text NOT NULL
);

CREATE INDEX IF NOT EXISTS integrations_history_name_version ON integrations_history (name, version);

-- The function keeps the search_path it was created with, so history lands in this schema whatever the
-- session's search_path; the channel is "<schema>.integrations".
CREATE OR REPLACE FUNCTION integrations_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    actor text := coalesce(nullif(current_setting('integration_config.actor', true), ''), session_user);
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO integrations_history (name, version, operation, config, changed_by)
        VALUES (OLD.name, OLD.version, 'delete', OLD.config, actor);
        PERFORM pg_notify(TG_TABLE_SCHEMA || '.integrations',
            json_build_object('name', OLD.name, 'version', OLD.version, 'operation', 'delete')::text);
        RETURN OLD;
    END IF;
    INSERT INTO integrations_history (name, version, operation, config, changed_by)
    VALUES (NEW.name, NEW.version, lower(TG_OP), NEW.config, NEW.updated_by);
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.integrations',
        json_build_object('name', NEW.name, 'version', NEW.version, 'operation', lower(TG_OP))::text);
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS integrations_changed ON integrations;
CREATE TRIGGER integrations_changed
AFTER INSERT OR UPDATE OR DELETE ON integrations
FOR EACH ROW EXECUTE FUNCTION integrations_changed();
