-- duet signaling: durable data (SQLite). Times are Unix seconds.
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    category TEXT NOT NULL,
    severity INTEGER NOT NULL,
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
    resolved_at INTEGER,
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
    data BLOB NOT NULL,
    captured_at INTEGER NOT NULL
);
CREATE INDEX report_snapshots_report ON report_snapshots (report_id);

CREATE TABLE bans (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('device', 'ip', 'cidr')),
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    lifted_at INTEGER,
    lifted_by TEXT,
    report_id TEXT REFERENCES reports (id)
);
CREATE INDEX bans_lookup ON bans (kind, value);

CREATE TABLE moderators (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('moderator', 'senior', 'admin')),
    created_at INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE appeals (
    id TEXT PRIMARY KEY,
    ban_id TEXT NOT NULL UNIQUE REFERENCES bans (id),
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'upheld', 'lifted')),
    decided_by TEXT,
    decided_at INTEGER,
    decision_reason TEXT
);
