\set s random(1700000000, 1900000000)
SELECT lifecycle.token_is_expired(to_timestamp(:s));
