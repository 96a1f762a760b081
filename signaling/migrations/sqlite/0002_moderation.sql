-- duet signaling: moderation (SQLite). Additive to 0001; times are Unix seconds.

-- Moderator tokens by id (`jti`): a logout revokes one, and every moderator
-- request checks it here, so revocation holds across replicas.
CREATE TABLE moderator_sessions (
    jti TEXT PRIMARY KEY,
    moderator_id TEXT NOT NULL REFERENCES moderators (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX moderator_sessions_expires ON moderator_sessions (expires_at);
ALTER TABLE moderators ADD COLUMN last_login_at INTEGER;

-- Retention: the report row stays (history), its evidence goes.
ALTER TABLE reports ADD COLUMN evidence_deleted_at INTEGER;
ALTER TABLE reports ADD COLUMN reason_template TEXT;
CREATE INDEX reports_resolved ON reports (status, resolved_at);
CREATE INDEX reports_pairing ON reports (pairing_id);

ALTER TABLE bans ADD COLUMN reason_template TEXT;
ALTER TABLE bans ADD COLUMN lift_reason TEXT;
CREATE INDEX bans_report ON bans (report_id);
CREATE INDEX bans_created ON bans (created_at);

CREATE INDEX appeals_status ON appeals (status, created_at);

CREATE INDEX audit_log_actor ON audit_log (actor, at);
CREATE INDEX audit_log_action ON audit_log (action, at);

-- Settings an admin changes at run time (retention, wall keyframes).
CREATE TABLE admin_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
