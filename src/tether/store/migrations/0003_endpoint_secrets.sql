-- A registered endpoint's shared secret: the runtime signs every request to it (HMAC-SHA256).
ALTER TABLE deployments ADD COLUMN secret TEXT;
