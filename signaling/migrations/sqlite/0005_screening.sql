-- duet signaling: automatic screening (SQLite). Additive; times are Unix seconds.

-- Samples that reached the review threshold, each with the snapshot that
-- produced it (samples below review are never stored). Kept as report
-- evidence is: see signaling/src/admin/retention.rs.
CREATE TABLE screening_samples (
    id TEXT PRIMARY KEY,
    pairing_id TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('a', 'b')),
    slot INTEGER NOT NULL,
    participant_id TEXT NOT NULL,
    device TEXT NOT NULL,
    node TEXT NOT NULL,
    screener TEXT NOT NULL,
    model TEXT NOT NULL,
    -- The category with the highest level, then score, and that score.
    category TEXT NOT NULL,
    score REAL NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('review', 'high')),
    -- Every category's score, JSON.
    scores TEXT NOT NULL,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL,
    captured_at INTEGER NOT NULL,
    -- The automatic report this sample filed, if it did.
    report_id TEXT REFERENCES reports (id) ON DELETE SET NULL
);
CREATE INDEX screening_samples_pairing ON screening_samples (pairing_id, side);
CREATE INDEX screening_samples_captured ON screening_samples (captured_at);
CREATE INDEX screening_samples_report ON screening_samples (report_id);

-- Calls a moderator looked at and cleared: not flagged again.
CREATE TABLE screening_clearances (
    pairing_id TEXT PRIMARY KEY,
    cleared_by TEXT NOT NULL,
    cleared_at INTEGER NOT NULL
);
CREATE INDEX screening_clearances_at ON screening_clearances (cleared_at);
