-- When the device was told that its appeal was accepted (shown once, on its next visit).
ALTER TABLE appeals ADD COLUMN outcome_shown_at INTEGER;
