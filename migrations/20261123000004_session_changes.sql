-- Every change to a session is announced on the channel `cake_session_changes` (the payload is
-- its id), so each control-plane replica can show its own observers what another replica
-- changed: a new title, a session made private (its observers' streams end), failed, deleted.
CREATE FUNCTION cake_notify_session_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cake_session_changes', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_notify_change
    AFTER UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION cake_notify_session_change();
