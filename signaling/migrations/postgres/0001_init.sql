-- duet signaling: durable data (PostgreSQL). Times are Unix seconds.
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    category TEXT NOT NULL,
    severity BIGINT NOT NULL,
    text TEXT NOT NULL,
    pairing_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    reporter_session TEXT NOT NULL,
    reporter_device TEXT NOT NULL,
    reporter_ip TEXT,
    reported_session TEXT NOT NULL,
    reported_device TEXT NOT NULL,
    reported_participant TEXT NOT NULL,
    reported_node TEXT NOT NULL,
    transcript TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    resolved_by TEXT,
    resolved_at BIGINT,
    resolution TEXT
);
CREATE INDEX reports_queue ON reports (status, severity DESC, created_at DESC);
CREATE INDEX reports_reported_device ON reports (reported_device);
CREATE INDEX reports_reporter_device ON reports (reporter_device);

CREATE TABLE report_snapshots (
    id TEXT PRIMARY KEY,
    report_id TEXT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    participant_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    data BYTEA NOT NULL,
    captured_at BIGINT NOT NULL
);
CREATE INDEX report_snapshots_report ON report_snapshots (report_id);

CREATE TABLE bans (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('device', 'ip', 'cidr')),
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    lifted_at BIGINT,
    lifted_by TEXT,
    report_id TEXT REFERENCES reports (id)
);
CREATE INDEX bans_lookup ON bans (kind, value);

CREATE TABLE moderators (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('moderator', 'senior', 'admin')),
    created_at BIGINT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT
);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE appeals (
    id TEXT PRIMARY KEY,
    ban_id TEXT NOT NULL UNIQUE REFERENCES bans (id),
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'upheld', 'lifted')),
    decided_by TEXT,
    decided_at BIGINT,
    decision_reason TEXT
);
