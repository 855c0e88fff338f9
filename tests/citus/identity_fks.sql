-- The foreign keys of identity.sql's tables in schema :s (on Citus: once all are distributed).
ALTER TABLE :s.user_session_authentications ADD FOREIGN KEY (user_id, user_session_id) REFERENCES :s.user_sessions;
ALTER TABLE :s.compat_sessions ADD FOREIGN KEY (user_id, user_session_id) REFERENCES :s.user_sessions;
