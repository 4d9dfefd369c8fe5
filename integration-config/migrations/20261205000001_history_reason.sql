-- Why a change was made: `PgStore::put_with` and `PgStore::rollback` record a reason next to who made
-- it. The reason travels like the actor, as a transaction-local setting read by the trigger.

ALTER TABLE integrations_history ADD COLUMN IF NOT EXISTS reason text;

CREATE OR REPLACE FUNCTION integrations_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    actor text := coalesce(nullif(current_setting('integration_config.actor', true), ''), session_user);
    why text := nullif(current_setting('integration_config.reason', true), '');
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO integrations_history (name, version, operation, config, changed_by, reason)
        VALUES (OLD.name, OLD.version, 'delete', OLD.config, actor, why);
        PERFORM pg_notify(TG_TABLE_SCHEMA || '.integrations',
            json_build_object('name', OLD.name, 'version', OLD.version, 'operation', 'delete')::text);
        RETURN OLD;
    END IF;
    INSERT INTO integrations_history (name, version, operation, config, changed_by, reason)
    VALUES (NEW.name, NEW.version, lower(TG_OP), NEW.config, NEW.updated_by, why);
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.integrations',
        json_build_object('name', NEW.name, 'version', NEW.version, 'operation', lower(TG_OP))::text);
    RETURN NEW;
END;
$$;
