-- The ban list reads bans lifted since its last read (see signaling/src/banlist.rs).
CREATE INDEX bans_lifted ON bans (lifted_at);
